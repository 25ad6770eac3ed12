-- The cluster's index of apps with timers: a sorted set in the nodes' slot, member = app,
-- score = when (Redis's clock, ms) the app's timers need asking next. A node that asks an
-- app's timers writes what it found here, so that another node fires them if it stops.
-- KEYS: 1 the index. ARGV 1 op.
--   take: 2 max, 3 lease ms. The apps due now (at most max), each moved lease ms on, so that
--         the other nodes leave it to this one meanwhile (a node that stops while asking it
--         leaves it to the next). Returns the apps.
--   set:  2 app, 3 ms from now until its next timer is due.
--   soon: 2.. apps to ask now, unless sooner already (the apps of a node that stopped).
--   drop: 2 app (it had no timers when asked).
local now = now_ms()
local op = ARGV[1]
if op == 'take' then
  local apps = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
  local at = now + tonumber(ARGV[3])
  for _, app in ipairs(apps) do redis.call('ZADD', KEYS[1], at, app) end
  return apps
elseif op == 'set' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
elseif op == 'soon' then
  for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'LT', now, ARGV[i]) end
elseif op == 'drop' then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return 1
