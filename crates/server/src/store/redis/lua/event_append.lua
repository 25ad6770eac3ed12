-- KEYS: stream, meta hash (last, bytes). ARGV: event, max events, max bytes, max age ms
-- (0: no cap). Appends the event under the partition's next sequence number, then drops the
-- oldest entries that fall outside the caps (a bounded number per call). Returns the sequence.
local stream, meta = KEYS[1], KEYS[2]
local event, max_n, max_b, age = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
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
