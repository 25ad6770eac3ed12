-- Sessions. KEYS: 1 the account's session ("node conn", with expiry), 2 the node's index,
-- 3 (open) the account's attributes.
-- ARGV 1 op:
--   open:  2 "node conn", 3 ttl ms, 4 index entry, 5 an attribute's name. Returns {the
--          previous value, the attribute's} (each false when none).
--   close: 2 "node conn" ('node ' alone matches any connection of that node), 4 index entry.
--          Compare-and-delete; returns 1 when this was the session.
local op = ARGV[1]
if op == 'open' then
  local old = redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], 'GET')
  redis.call('SADD', KEYS[2], ARGV[4])
  if not old then outbox('first') end
  outbox('done')
  return {old or false, redis.call('HGET', KEYS[3], ARGV[5]) or false}
elseif op == 'close' then
  redis.call('SREM', KEYS[2], ARGV[4])
  local cur = redis.call('GET', KEYS[1])
  if cur and (cur == ARGV[2] or string.sub(cur, 1, #ARGV[2]) == ARGV[2] and string.sub(ARGV[2], -1) == ' ') then
    redis.call('DEL', KEYS[1])
    outbox('done')
    return 1
  end
  return 0
end
