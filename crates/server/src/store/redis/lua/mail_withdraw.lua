-- Drop the message of one version if it has the msg-v3 id given (a mailbox numbered again may
-- hold another there). KEYS: the box (mail.lua). ARGV: the box, version, id.
-- Returns 1 when it was there.
local box = box_at(1, 1)
local v, id = ARGV[BOX_ARGS + 1], ARGV[BOX_ARGS + 2]
local items = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', box.mb, v, v)) do
  if string.match(m, '^%d+ (%S+) ') == id then items[#items + 1] = m end
end
if drop_members(box, items) > 0 then
  -- the next message counts the mailbox (mail.lua)
  redis.call('HDEL', box.meta, 'held')
  return 1
end
return 0
