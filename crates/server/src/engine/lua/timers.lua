-- Claim due timers with a lease: a claimed timer is pushed lease ms into the future, so if the
-- claiming node dies before finishing it, another node fires it. KEYS: 1 timers zset.
-- ARGV: 1 lease ms, 2 max. Returns the claimed members.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), m) end
return due
