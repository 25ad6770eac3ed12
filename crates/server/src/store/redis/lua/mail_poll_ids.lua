-- Drop the messages whose ids are listed, return (and count as acknowledged) up to max of the
-- rest. KEYS: 1 mailbox, 2 meta. ARGV: 1 max, 2.. ids. Returns {cleared, v1, text1, ...}.
local now = now_ms()
local ids = {}
for i = 2, #ARGV do ids[ARGV[i]] = true end
local out = {0}
local max = tonumber(ARGV[1])
local n = 0
local lastv = nil
local items = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  local m = items[i]
  local exp, id, text = string.match(m, '^(%d+) (%S+) (.*)$')
  if tonumber(exp) <= now or ids[id] then
    redis.call('ZREM', KEYS[1], m)
  elseif n < max then
    n = n + 1
    out[#out + 1] = items[i + 1]
    out[#out + 1] = text
    lastv = tonumber(items[i + 1])
  end
end
if lastv then
  local cleared = tonumber(redis.call('HGET', KEYS[2], 'cleared') or '0')
  if lastv > cleared then
    redis.call('HSET', KEYS[2], 'cleared', lastv)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', lastv)
  end
end
out[1] = tonumber(redis.call('HGET', KEYS[2], 'cleared') or '0')
return out
