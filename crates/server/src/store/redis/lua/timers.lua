-- Timers: a sorted set, score = due time (Redis's clock), member = the encoded timer.
-- KEYS: 1 timers. ARGV 1 op.
--   schedule: 2 member, 3 delay ms (replaces the same timer's due time).
--   claim:    2 lease ms, 3 max. A claimed timer moves lease ms into the future, so if the
--             node that claimed it dies before finishing, another node fires it. Returns
--             {member, lease end, ..., ms until the next timer is due (-1: none)}.
--   done:     2 member, 3 lease end. Removes the timer unless it was scheduled again since.
local now = now_ms()
if ARGV[1] == 'schedule' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  return 1
elseif ARGV[1] == 'done' then
  if redis.call('ZSCORE', KEYS[1], ARGV[2]) == ARGV[3] then redis.call('ZREM', KEYS[1], ARGV[2]) end
  return 1
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
local lease = now + tonumber(ARGV[2])
for _, m in ipairs(due) do
  redis.call('ZADD', KEYS[1], lease, m)
  out[#out + 1] = m
  out[#out + 1] = tostring(lease)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
out[#out + 1] = nxt[2] and tostring(math.max(0, tonumber(nxt[2]) - now)) or '-1'
return out
