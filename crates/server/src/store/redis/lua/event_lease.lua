-- KEYS: the lease. ARGV: holder, ttl ms. Takes a free lease or renews one's own; returns 1
-- when the holder has it, 0 while another one does.
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
