-- Acknowledge up to ver_clear (never backwards), drop what is acknowledged or expired, return
-- up to max messages after it. When the numbering went back under the client (the rule of
-- store::renumbered: ver_clear is above the last version handed out, or the message held at
-- ver_clear is not the one the client processed there, seen id), the messages above the
-- acknowledged version are first numbered again after max(ver_clear, last), in their order.
-- KEYS: the box (mail.lua). ARGV: the box, ver_clear, max, seen id ('': none).
-- Returns {cleared, v1, text1, v2, text2, ...}.
local box = box_at(1, 1)
local a = BOX_ARGS + 1
local now = now_ms()
local meta = redis.call('HMGET', box.meta, 'cleared', 'last', 'held', 'boxed', 'kept')
local cleared, last = tonumber(meta[1] or '0'), tonumber(meta[2] or '0')
-- what the mailbox holds, when the meta hash knows it (mail.lua)
local held = tonumber(meta[3])
if held and now >= tonumber(meta[4] or '0') then held = nil end
local want = tonumber(ARGV[a])
if want > 9007199254740991 then want = 9007199254740991 end
local seen = ARGV[a + 2]
-- what the poll acknowledges, read once: the last of them may be the message at ver_clear
local acked, back = {}, want > last
if want > cleared then
  local scored = redis.call('ZRANGEBYSCORE', box.mb, '-inf', want, 'WITHSCORES')
  for i = 1, #scored, 2 do acked[#acked + 1] = scored[i] end
  local n = #scored
  if seen ~= '' and n > 0 and tonumber(scored[n]) == want then
    back = back or string.match(scored[n - 1], '^%d+ (%S+) ') ~= seen
  end
end
if back then
  local from = math.max(want, last)
  local rest = redis.call('ZRANGEBYSCORE', box.mb, '(' .. cleared, '+inf')
  if #rest > 0 and from + #rest <= 9007199254740991 then
    redis.call('ZREMRANGEBYSCORE', box.mb, '(' .. cleared, '+inf')
    for s = 1, #rest, 500 do
      local args = {}
      for i = s, math.min(s + 499, #rest) do
        args[#args + 1] = from + i
        args[#args + 1] = rest[i]
      end
      redis.call('ZADD', box.mb, unpack(args))
    end
    -- a mailbox emptied and filled again has lost its expiry
    if tonumber(meta[4] or '0') > now then redis.call('PEXPIREAT', box.mb, meta[4]) end
    last = from + #rest
    -- what it acknowledges now: none of them (all above ver_clear), and what the mailbox
    -- may still hold up to its own acknowledged version
    acked = nil
  end
end
if want > cleared then cleared = want end
if cleared > last then last = cleared end
local dropped = drop_mail_upto(box, cleared, acked)
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
dropped = dropped + drop_members(box, expired)
-- the meta hash notes what changed, and is kept as mail.lua's keep_due says; a mailbox that
-- never had a message and is polled from 0 (every login of an account nobody wrote to) leaves
-- nothing behind
local set = {}
if cleared ~= tonumber(meta[1] or '0') then set[#set + 1], set[#set + 2] = 'cleared', cleared end
if last ~= tonumber(meta[2] or '0') then set[#set + 1], set[#set + 2] = 'last', last end
if held and dropped > 0 then set[#set + 1], set[#set + 2] = 'held', math.max(held - dropped, 0) end
if meta[1] or meta[2] or meta[3] or meta[5] or #set > 0 then
  local kept = keep_due(set, now, box.keep_ms, meta[5])
  if #set > 0 then redis.call('HSET', box.meta, unpack(set)) end
  if kept then redis.call('PEXPIRE', box.meta, kept) end
end
return out
