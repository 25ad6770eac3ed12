-- ARGV: 4 op (set|del|clear), 5 setter, 6 name, 7 value, 8 content, 9 default changes/s per
-- attribute, 10 max attributes, 11 default ttl s, 12 special. Returns 'ok' or an error string.
local op, name = ARGV[4], ARGV[6]
if op == 'set' then
  local limit = tonumber(redis.call('HGET', KEYS[5], '_setattr_limit') or ARGV[9]) or tonumber(ARGV[9])
  if limit > 0 and not take_token(KEYS[8] .. ' a ' .. name, limit) then return 'rate_limited' end
  if redis.call('HEXISTS', KEYS[5], name) == 0 and redis.call('HLEN', KEYS[5]) >= tonumber(ARGV[10]) then
    return 'too_large'
  end
  redis.call('HSET', KEYS[5], name, ARGV[7])
elseif op == 'del' then
  redis.call('HDEL', KEYS[5], name)
else
  redis.call('DEL', KEYS[5])
end
broadcast('-', ARGV[5], 'channel_attr_update', ARGV[8])
expire_if_empty(ARGV[12], ARGV[11])
return 'ok'
