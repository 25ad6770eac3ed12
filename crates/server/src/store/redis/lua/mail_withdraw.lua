-- Drop the message of one version. KEYS: the box (mail.lua). ARGV: the box, version.
-- Returns 1 when it was there.
local box = box_at(1, 1)
local v = ARGV[BOX_ARGS + 1]
local items = redis.call('ZRANGEBYSCORE', box.mb, v, v)
drop_members(box, items)
if #items > 0 then return 1 end
return 0
