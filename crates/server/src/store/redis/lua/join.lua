-- ARGV after the common ones: +0 account, +1 node, +2 conn, +3 list max, +4 event before
-- ('' = no event), +5 event after, +6 joined message (to this node), +7 left message (to a
-- node the membership moves from), +8 index entry (in OWN, this node's index of its
-- memberships), +9.. the other live nodes, whose indexes are KEYS 18.. in the same order (a
-- membership that moves from one of them leaves its index here; from another node — one
-- registered after this node last read the registry, or one gone — the caller has leave.lua
-- take it out).
-- Returns {fresh, n, last message number, the node the membership moved from when its index
-- was not among KEYS ('' else), member1..memberN, attr name, value, ...}.
catch_up_all()
local account, node, conn = ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 2]
local me = node .. ' ' .. conn
local entry = ARGV[FIRST + 8]
local index_of = {[node] = OWN}
for i = 18, #KEYS do index_of[ARGV[FIRST + 9 + i - 18]] = KEYS[i] end
local cur = redis.call('HGET', LOCATION, account)
local fresh = 0
local unindexed = ''
if cur then
  if cur ~= me then
    local onode = string.match(cur, '^(%S+) ')
    if onode then
      if redis.call('HINCRBY', NODES, onode, -1) <= 0 then redis.call('HDEL', NODES, onode) end
      if index_of[onode] then
        redis.call('SREM', index_of[onode], entry)
      else
        unindexed = onode
      end
      publish_all(TOPIC .. onode, {ARGV[FIRST + 7]})
    end
    redis.call('HINCRBY', NODES, node, 1)
    redis.call('HSET', LOCATION, account, me)
    redis.call('SADD', OWN, entry)
  end
else
  fresh = 1
  local order = redis.call('INCR', ORDER)
  redis.call('ZADD', MEMBERS, order, account)
  redis.call('HSET', LOCATION, account, me)
  redis.call('HINCRBY', NODES, node, 1)
  redis.call('SADD', OWN, entry)
end
local max = tonumber(ARGV[FIRST + 3])
local list = redis.call('ZREVRANGE', MEMBERS, 0, max - 1)
-- the first member of an empty channel keeps its state from expiring (a channel with members
-- has no expiry: only an empty one is given one, if_empty); a list of one, where it could
-- have held two, is the whole membership
local first = fresh == 1 and (max > 1 and #list == 1 or max <= 1 and redis.call('ZCARD', MEMBERS) == 1)
if first then keep() end
-- from here on the joiner's node fans this channel out to it (in order with every event: the
-- joiner's own event goes to its node in one bundle with it)
local joined = ARGV[FIRST + 6]
if fresh == 1 then
  redis.call('SET', CHANGED, '1')
  member_event(ARGV[FIRST + 4], ARGV[FIRST + 5], {node, joined})
  if first then outbox('first') end
  outbox('done')
else
  publish_all(TOPIC .. node, {joined})
end
local out = {fresh, #list, tonumber(redis.call('HGET', HMETA, 'n') or '0'), unindexed}
for _, a in ipairs(list) do out[#out + 1] = a end
for _, v in ipairs(redis.call('HGETALL', ATTRS)) do out[#out + 1] = v end
return out
