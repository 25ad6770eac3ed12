-- Append a message to a mailbox and push it to the recipient's node, atomically (so pushes
-- leave in version order). KEYS: 1 mailbox zset, 2 mailbox meta hash, 3 recipient session,
-- 4 dedup key. ARGV: 1 ttl ms, 2 max messages, 3 msg text, 4 dedup (0/1), 5 dedup window ms,
-- 6 node topic prefix. Returns {status, version}: 0 stored, 1 duplicate, 2 mailbox full.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then
    return {1, 0}
  end
end
local ttl = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= max then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    local exp = tonumber(string.match(m, '^(%d+) '))
    if exp and exp <= now then redis.call('ZREM', KEYS[1], m) end
  end
  if redis.call('ZCARD', KEYS[1]) >= max then
    if ARGV[4] == '1' then redis.call('DEL', KEYS[4]) end
    return {2, 0}
  end
end
local last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
if last >= 9007199254740991 then return {2, 0} end
last = last + 1
redis.call('HSET', KEYS[2], 'last', last)
redis.call('PEXPIRE', KEYS[2], 604800000)
redis.call('ZADD', KEYS[1], last, (now + ttl) .. ' ' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
local s = redis.call('GET', KEYS[3])
if s then
  local node, conn = string.match(s, '^(%S+) (%S+)$')
  if node then redis.call('PUBLISH', ARGV[6] .. node, 'm ' .. conn .. ' ' .. last .. ' ' .. ARGV[3]) end
end
return {0, last}
