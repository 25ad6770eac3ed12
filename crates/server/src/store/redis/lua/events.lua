-- Prepended to every script: the app's event log (one stream and one meta hash with last and
-- bytes per partition) and the events a step appends with its change (store::Outbox).

-- Append `event` under the partition's next sequence number, then drop the oldest entries
-- outside the caps (0: none; a bounded number per call). Returns the sequence number.
local function append_event(stream, meta, event, max_n, max_b, age)
  local now = now_ms()
  local seq = redis.call('HINCRBY', meta, 'last', 1)
  redis.call('XADD', stream, seq .. '-0', 'e', event, 't', now)
  local bytes = redis.call('HINCRBY', meta, 'bytes', #event)
  local len = redis.call('XLEN', stream)
  for _ = 1, 64 do
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not first then break end
    local f = first[2]
    local over = (max_n > 0 and len > max_n) or (max_b > 0 and bytes > max_b)
      or tonumber(f[4]) < now - age
    if not over then break end
    redis.call('XDEL', stream, first[1])
    len = len - 1
    bytes = redis.call('HINCRBY', meta, 'bytes', -#f[2])
  end
  -- an app that stops producing events leaves nothing behind
  redis.call('PEXPIRE', stream, age + 60000)
  redis.call('PEXPIRE', meta, age + 60000)
  return seq
end

-- A step's events ride at the end of its KEYS and ARGV, taken off before the script reads
-- them: when the last ARGV is "\31outbox:<n>", the n events are ARGV (when, event) pairs
-- before max events, max bytes, max age ms, and KEYS (stream, meta) pairs at the end.
local OUTBOX = {}
local OUTBOX_CAP = {0, 0, 0}
do
  local n = tonumber(string.match(ARGV[#ARGV] or '', '^\31outbox:(%d+)$') or '')
  if n then
    table.remove(ARGV)
    local age = tonumber(table.remove(ARGV))
    local max_b = tonumber(table.remove(ARGV))
    OUTBOX_CAP = {tonumber(table.remove(ARGV)), max_b, age}
    for i = n, 1, -1 do
      local event, when = table.remove(ARGV), table.remove(ARGV)
      local meta, stream = table.remove(KEYS), table.remove(KEYS)
      OUTBOX[i] = {when = when, stream = stream, meta = meta, event = event}
    end
  end
end

-- The step's outcome `when` happened: append the events planned for it, in order.
local function outbox(when)
  for _, e in ipairs(OUTBOX) do
    if e.when == when then
      append_event(e.stream, e.meta, e.event, OUTBOX_CAP[1], OUTBOX_CAP[2], OUTBOX_CAP[3])
    end
  end
end
