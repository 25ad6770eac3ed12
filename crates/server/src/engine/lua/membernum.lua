-- The _member_num timer of a channel. ARGV: 4 content template prefix (unused), returns
-- {period s, pushed}: period 0 = stop.
local period = tonumber(redis.call('HGET', KEYS[5], '_auto_update_num') or '0') or 0
if period <= 0 or redis.call('EXISTS', KEYS[2]) == 0 then return {0, 0} end
if redis.call('GETDEL', KEYS[7]) then
  local num = tostring(redis.call('ZCARD', KEYS[1]))
  redis.call('HSET', KEYS[5], '_member_num', num)
  local content = ARGV[4] .. num .. ARGV[5]
  broadcast('-', '-', 'channel_attr_update', content)
  return {period, 1}
end
return {period, 0}
