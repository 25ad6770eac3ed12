-- Watch (ARGV[2] == '1') or stop watching accounts from one session.
-- KEYS[1]: the app's watch count; KEYS[2..]: the watched accounts' watcher sets.
-- ARGV[1]: the watcher's location ("node conn"); ARGV[3]: the app's maximum.
-- Returns 1, or 0 when new watches would pass the maximum (nothing changed).
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[2] == '1' then
  local fresh = 0
  for i = 2, #KEYS do
    if redis.call('SISMEMBER', KEYS[i], ARGV[1]) == 0 then fresh = fresh + 1 end
  end
  if count + fresh > tonumber(ARGV[3]) then return 0 end
  for i = 2, #KEYS do redis.call('SADD', KEYS[i], ARGV[1]) end
  if fresh > 0 then redis.call('INCRBY', KEYS[1], fresh) end
else
  local gone = 0
  for i = 2, #KEYS do gone = gone + redis.call('SREM', KEYS[i], ARGV[1]) end
  if gone > 0 then
    if count - gone <= 0 then redis.call('DEL', KEYS[1]) else redis.call('DECRBY', KEYS[1], gone) end
  end
end
return 1
