-- Set (ARGV 2 present) or delete one user attribute, refusing a new one beyond ARGV 3.
-- KEYS: 1 attributes hash. ARGV: 1 name, 2 value ('' with ARGV 4 = 'del'), 3 max, 4 op.
-- Returns 1 done, 0 over the maximum.
if ARGV[4] == 'del' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
