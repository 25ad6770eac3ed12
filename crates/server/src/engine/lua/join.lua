-- ARGV: 4 account, 5 node, 6 conn, 7 list max, 8 special, 9 join content, 10 node index prefix.
local account, node, conn = ARGV[4], ARGV[5], ARGV[6]
local me = node .. ' ' .. conn
local index = APP .. ' ' .. CH .. ' ' .. account .. ' '
local cur = redis.call('HGET', KEYS[3], account)
local fresh = 0
if cur then
  if cur ~= me then
    local onode, oconn = string.match(cur, '^(%S+) (%S+)$')
    if onode then
      if redis.call('HINCRBY', KEYS[4], onode, -1) <= 0 then redis.call('HDEL', KEYS[4], onode) end
      redis.call('SREM', ARGV[10] .. onode, index .. oconn)
      redis.call('PUBLISH', TOPIC .. onode, 'l ' .. APP .. ' ' .. CH .. ' ' .. account .. ' ' .. oconn)
    end
    redis.call('HINCRBY', KEYS[4], node, 1)
    redis.call('HSET', KEYS[3], account, me)
    redis.call('SADD', ARGV[10] .. node, index .. conn)
  end
else
  fresh = 1
  local order = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[1], order, account)
  redis.call('HSET', KEYS[3], account, me)
  redis.call('HINCRBY', KEYS[4], node, 1)
  redis.call('SADD', ARGV[10] .. node, index .. conn)
end
keep()
-- from here on the joiner's node fans this channel out to it (in order with every event)
redis.call('PUBLISH', TOPIC .. node, 'j ' .. APP .. ' ' .. CH .. ' ' .. account .. ' ' .. conn)
if fresh == 1 then
  redis.call('SET', KEYS[7], '1')
  if ARGV[8] ~= '1' and redis.call('HGET', KEYS[5], '_userNotification') ~= '0' then
    broadcast(account, account, 'channel_user_join', ARGV[9])
  end
end
local list = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[7]) - 1)
local out = {fresh, #list}
for _, a in ipairs(list) do out[#out + 1] = a end
for _, v in ipairs(redis.call('HGETALL', KEYS[5])) do out[#out + 1] = v end
return out
