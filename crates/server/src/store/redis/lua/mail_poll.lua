-- Acknowledge up to ver_clear (never backwards), drop what is acknowledged or expired, return
-- up to max messages after it. KEYS: 1 mailbox, 2 meta. ARGV: 1 ver_clear, 2 max.
-- Returns {cleared, v1, text1, v2, text2, ...}.
local now = now_ms()
local cleared = tonumber(redis.call('HGET', KEYS[2], 'cleared') or '0')
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
local want = tonumber(ARGV[1])
if want > 9007199254740991 then want = 9007199254740991 end
if want > cleared then cleared = want end
if cleared > last then last = cleared end
redis.call('HSET', KEYS[2], 'cleared', cleared, 'last', last)
redis.call('PEXPIRE', KEYS[2], 604800000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cleared)
local out = {cleared}
local max = tonumber(ARGV[2])
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cleared, '+inf', 'WITHSCORES', 'LIMIT', 0, max + 64)
local n = 0
for i = 1, #items, 2 do
  local m = items[i]
  local exp, text = string.match(m, '^(%d+) %S+ (.*)$')
  if tonumber(exp) <= now then
    redis.call('ZREM', KEYS[1], m)
  elseif n < max then
    n = n + 1
    out[#out + 1] = items[i + 1]
    out[#out + 1] = text
  end
end
return out
