-- ARGV after the common ones: +0 the member the sender must be ('' = anyone), +1 a resend
-- marker (OWN, 1/0), +2 its window ms, +3 rate limited (1/0), +4 event before, +5 event after,
-- +6 a message (1/0: numbered and kept), +7 its sender, +8 its text, +9 history age ms,
-- +10 history bytes, +11 keep it (1/0), +12 the send's identity ('' = none).
-- Creates no state for a channel without members. Returns 'sent', 'duplicate',
-- 'not_member' or 'rate_limited'.
local member = ARGV[FIRST]
if member ~= '' and redis.call('HEXISTS', LOCATION, member) == 0 then return 'not_member' end
if redis.call('ZCARD', MEMBERS) == 0 then outbox('done') return 'sent' end
local dedup = ARGV[FIRST + 1] == '1'
if dedup and not redis.call('SET', OWN, '1', 'NX', 'PX', ARGV[FIRST + 2]) then
  return 'duplicate'
end
if ARGV[FIRST + 3] == '1' then
  local limit = tonumber(setting('msg_rate')) or 0
  if limit > 0 and not take_token(MSG_RATE, limit) then
    if dedup then redis.call('DEL', OWN) end
    return 'rate_limited'
  end
end
if ARGV[FIRST + 6] ~= '1' then
  publish(ARGV[FIRST + 4], ARGV[FIRST + 5])
  outbox('done')
  return 'sent'
end
local n = next_number(HMETA, 'n', SEEN_MSG)
local id = ARGV[FIRST + 12]
local seq = publish(ARGV[FIRST + 4], ARGV[FIRST + 5], n .. ';' .. (id ~= '' and id .. ';' or ''))
local size = tonumber(setting('history')) or 0
if ARGV[FIRST + 11] == '1' and size > 0 then
  local now, text, max_bytes = now_ms(), ARGV[FIRST + 8], tonumber(ARGV[FIRST + 10])
  if id ~= '' then
    redis.call('XADD', HIST, n .. '-0', 't', now, 's', seq, 'f', ARGV[FIRST + 7], 'm', text, 'i', id)
  else
    redis.call('XADD', HIST, n .. '-0', 't', now, 's', seq, 'f', ARGV[FIRST + 7], 'm', text)
  end
  local bytes = redis.call('HINCRBY', HMETA, 'b', #text)
  -- trimmed in batches: past the size by an eighth (at least 8), past the bytes at once, and
  -- every 64th message for age; readers see only the latest `size` and none too old
  if bytes > max_bytes or n % 64 == 0 or redis.call('XLEN', HIST) > size + math.max(8, size / 8) then
    trim_history(size, now - tonumber(ARGV[FIRST + 9]), max_bytes)
  end
end
outbox('done')
return 'sent'
