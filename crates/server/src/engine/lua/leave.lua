-- ARGV: 4 account, 5 node, 6 conn, 7 special, 8 leave content, 9 default ttl s, 10 node index
-- prefix. Only the membership held by (node, conn) is removed. Returns 1 when it left.
local account, node, conn = ARGV[4], ARGV[5], ARGV[6]
if redis.call('HGET', KEYS[3], account) ~= node .. ' ' .. conn then return 0 end
redis.call('ZREM', KEYS[1], account)
redis.call('HDEL', KEYS[3], account)
if redis.call('HINCRBY', KEYS[4], node, -1) <= 0 then redis.call('HDEL', KEYS[4], node) end
redis.call('SREM', ARGV[10] .. node, APP .. ' ' .. CH .. ' ' .. account .. ' ' .. conn)
redis.call('PUBLISH', TOPIC .. node, 'l ' .. APP .. ' ' .. CH .. ' ' .. account .. ' ' .. conn)
redis.call('SET', KEYS[7], '1')
if ARGV[7] ~= '1' and redis.call('HGET', KEYS[5], '_userNotification') ~= '0' then
  broadcast(account, account, 'channel_user_leave', ARGV[8])
end
expire_if_empty(ARGV[7], ARGV[9])
return 1
