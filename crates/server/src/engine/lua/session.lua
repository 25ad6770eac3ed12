-- Sessions. login: KEYS 1 session, 2 node's session index; ARGV 1 op, 2 "node conn", 3 ttl ms,
-- 4 index member. Returns the previous "node conn" (or false).
-- logout: compare-and-delete; returns 1 when this connection's session ended.
-- online: ARGV 2 node key prefix; returns 1 when the session's node is alive.
local op = ARGV[1]
if op == 'login' then
  local old = redis.call('GET', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
  return old or false
elseif op == 'logout' then
  redis.call('SREM', KEYS[2], ARGV[4])
  if redis.call('GET', KEYS[1]) == ARGV[2] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
else
  local s = redis.call('GET', KEYS[1])
  if not s then return 0 end
  local node = string.match(s, '^(%S+) ')
  return redis.call('EXISTS', ARGV[2] .. node)
end
