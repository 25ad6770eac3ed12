-- Acknowledge up to ver_clear (never backwards), drop what is acknowledged or expired, return
-- up to max messages after it. KEYS: the box (mail.lua). ARGV: the box, ver_clear, max.
-- Returns {cleared, v1, text1, v2, text2, ...}.
local box = box_at(1, 1)
local a = BOX_ARGS + 1
local now = now_ms()
local meta = redis.call('HMGET', box.meta, 'cleared', 'last')
local cleared, last = tonumber(meta[1] or '0'), tonumber(meta[2] or '0')
local want = tonumber(ARGV[a])
if want > 9007199254740991 then want = 9007199254740991 end
if want > cleared then cleared = want end
if cleared > last then last = cleared end
redis.call('HSET', box.meta, 'cleared', cleared, 'last', last, 'kept', now + box.keep_ms)
redis.call('PEXPIRE', box.meta, box.keep_ms)
drop_mail_upto(box, cleared)
local out = {cleared}
local max = tonumber(ARGV[a + 1])
local items = redis.call('ZRANGEBYSCORE', box.mb, '(' .. cleared, '+inf', 'WITHSCORES', 'LIMIT', 0, max + 64)
local n, expired = 0, {}
for i = 1, #items, 2 do
  local m = items[i]
  local exp, text = string.match(m, '^(%d+) %S+ (.*)$')
  if tonumber(exp) <= now then
    expired[#expired + 1] = m
  elseif n < max then
    n = n + 1
    out[#out + 1] = items[i + 1]
    out[#out + 1] = text
  end
end
drop_members(box, expired)
return out
