-- ARGV after the common ones: +0 the member the sender must be ('' = anyone), +1 dedup key
-- ('' = none), +2 dedup window ms, +3 rate limited (1/0), +4 event before, +5 event after.
-- Creates no state for a channel without members. Returns 'sent', 'duplicate',
-- 'not_member' or 'rate_limited'.
local member = ARGV[FIRST]
if member ~= '' and redis.call('HEXISTS', LOCATION, member) == 0 then return 'not_member' end
if redis.call('ZCARD', MEMBERS) == 0 then return 'sent' end
local dedup = ARGV[FIRST + 1]
if dedup ~= '' and not redis.call('SET', dedup, '1', 'NX', 'PX', ARGV[FIRST + 2]) then
  return 'duplicate'
end
if ARGV[FIRST + 3] == '1' then
  local limit = tonumber(setting('msg_rate')) or 0
  if limit > 0 and not take_token(RATE .. ' m', limit) then
    if dedup ~= '' then redis.call('DEL', dedup) end
    return 'rate_limited'
  end
end
publish(ARGV[FIRST + 4], ARGV[FIRST + 5])
return 'sent'
