-- Drop the messages whose ids are listed, return (and count as acknowledged) up to max of the
-- rest. KEYS: the box (mail.lua). ARGV: the box, max, then the ids.
-- Returns {cleared, v1, text1, ...}.
local box = box_at(1, 1)
local a = BOX_ARGS + 1
local now = now_ms()
local ids = {}
for i = a + 1, #ARGV do ids[ARGV[i]] = true end
local out = {0}
local max = tonumber(ARGV[a])
local n = 0
local lastv = nil
local dropped = {}
local items = redis.call('ZRANGE', box.mb, 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  local m = items[i]
  local exp, id, text = string.match(m, '^(%d+) (%S+) (.*)$')
  if tonumber(exp) <= now or ids[id] then
    dropped[#dropped + 1] = m
  elseif n < max then
    n = n + 1
    out[#out + 1] = items[i + 1]
    out[#out + 1] = text
    lastv = tonumber(items[i + 1])
  end
end
local gone = drop_members(box, dropped)
if lastv then
  local cleared = tonumber(redis.call('HGET', box.meta, 'cleared') or '0')
  if lastv > cleared then
    redis.call('HSET', box.meta, 'cleared', lastv)
    gone = gone + drop_mail_upto(box, lastv)
  end
end
-- the whole mailbox was read: what it holds now (mail.lua); a mailbox nobody wrote to keeps
-- nothing
if #items > 0 or redis.call('EXISTS', box.meta) == 1 then
  redis.call('HSET', box.meta, 'held', #items / 2 - gone)
end
out[1] = tonumber(redis.call('HGET', box.meta, 'cleared') or '0')
if redis.call('PEXPIRE', box.meta, box.keep_ms) == 1 then
  redis.call('HSET', box.meta, 'kept', now + box.keep_ms)
end
return out
