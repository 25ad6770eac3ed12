-- ARGV after the common ones: +0 account, +1 "node conn" of the membership ("node " alone:
-- any connection of that node; "node -": none, so that only a stale entry goes), +2 event before ('' = none), +3 event after, +4 left message,
-- +5 index entry (in OWN, the index of the membership's node). Only that membership is
-- removed; when the account is no member through that node (any more), the entry is stale
-- and leaves the index. Returns 1 when it left.
local account, me = ARGV[FIRST], ARGV[FIRST + 1]
local cur = redis.call('HGET', LOCATION, account)
local node = cur and string.match(cur, '^(%S+) ')
if not cur or (cur ~= me and not (string.sub(me, -1) == ' ' and string.sub(cur, 1, #me) == me)) then
  if node ~= string.match(me, '^(%S+) ') then redis.call('SREM', OWN, ARGV[FIRST + 5]) end
  return 0
end
redis.call('ZREM', MEMBERS, account)
redis.call('HDEL', LOCATION, account)
if redis.call('HINCRBY', NODES, node, -1) <= 0 then redis.call('HDEL', NODES, node) end
redis.call('SREM', OWN, ARGV[FIRST + 5])
redis.call('SET', CHANGED, '1')
-- the node stops fanning this channel out to the member (in one bundle with the member's
-- event, when that node still has members here)
member_event(ARGV[FIRST + 2], ARGV[FIRST + 3], {node, ARGV[FIRST + 4]})
outbox('done')
-- a channel that still has members keeps its place in the ledger (join and attr.lua put it
-- there): only the last member's leave changes it
if redis.call('ZCARD', MEMBERS) == 0 then
  outbox('last')
  if_empty(true)
end
return 1
