-- ARGV after the common ones: +0 op (set|del|clear), +1 name, +2 value, +3 setting field
-- ('' = none), +4 setting value, +5 rate limited (1/0), +6 max attributes, +7 event before,
-- +8 event after. Returns 'done', 'rate_limited' or 'too_many'.
local op, name = ARGV[FIRST], ARGV[FIRST + 1]
local field, fvalue = ARGV[FIRST + 3], ARGV[FIRST + 4]
if op == 'set' then
  if ARGV[FIRST + 5] == '1' then
    local limit = tonumber(setting('attr_rate')) or 0
    if limit > 0 and not take_token(RATE .. ' a ' .. name, limit) then return 'rate_limited' end
  end
  if redis.call('HEXISTS', ATTRS, name) == 0 and redis.call('HLEN', ATTRS) >= tonumber(ARGV[FIRST + 6]) then
    return 'too_many'
  end
  redis.call('HSET', ATTRS, name, ARGV[FIRST + 2])
  if field ~= '' then redis.call('HSET', SETTINGS, field, fvalue) end
elseif op == 'del' then
  redis.call('HDEL', ATTRS, name)
  if field ~= '' then redis.call('HSET', SETTINGS, field, fvalue) end
else
  redis.call('DEL', ATTRS, SETTINGS)
end
publish(ARGV[FIRST + 7], ARGV[FIRST + 8])
if_empty()
return 'done'
