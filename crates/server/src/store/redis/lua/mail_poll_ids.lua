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
local meta = redis.call('HMGET', box.meta, 'cleared', 'held', 'kept')
local cleared = tonumber(meta[1] or '0')
local set = {}
if lastv and lastv > cleared then
  cleared = lastv
  set[#set + 1], set[#set + 2] = 'cleared', cleared
  gone = gone + drop_mail_upto(box, lastv)
end
out[1] = cleared
-- the whole mailbox was read: what it holds now (mail.lua); the meta hash notes what changed
-- and is kept as mail.lua's keep_due says, as mail_poll.lua does; a mailbox nobody wrote to
-- keeps nothing
if #items > 0 or meta[1] or meta[2] or meta[3] then
  local held = #items / 2 - gone
  if held ~= tonumber(meta[2]) then set[#set + 1], set[#set + 2] = 'held', held end
  local kept = keep_due(set, now, box.keep_ms, meta[3])
  if #set > 0 then redis.call('HSET', box.meta, unpack(set)) end
  if kept then redis.call('PEXPIRE', box.meta, kept) end
end
return out
