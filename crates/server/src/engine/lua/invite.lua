-- Take an invitation for firing its timer: only the caller that sees the right generation
-- gets it (and deletes it), so a timer has its effect once. KEYS: 1 invitation hash.
-- ARGV: 1 generation. Returns {acked, version, extra} or false.
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return false end
local r = redis.call('HMGET', KEYS[1], 'acked', 'version', 'extra')
redis.call('DEL', KEYS[1])
return r
