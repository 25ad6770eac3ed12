-- Invitations (with mail.lua). A record is a hash: extra, state (ringing | acked | accepted),
-- version (the callee's mailbox version of the invitation), gen. The caller's index lists its
-- invitations (entries made by the caller of the script).
-- ARGV 1 op.
--   open: KEYS 1 callee mailbox, 2 meta, 3 callee session, 4 dedup key, 5 record,
--         6 caller index, 7 timers. ARGV 2 dedup ms, 3 ttl ms, 4 max mail, 5 id, 6 text,
--         7 topic prefix, 8 push before, 9 push after, 10 extra, 11 gen, 12 index entry,
--         13 timer count, then per timer: member, delay ms.
--         Mail, record and timers in one step. Returns {status, version} as append_mail.
--   relay: KEYS 1 recipient mailbox, 2 meta, 3 recipient session, 4 dedup key, then record
--         and caller index per invitation. ARGV 2..9 as open, 10 step (keep | ack | accept |
--         end), 11 require live (1/0), then an index entry per invitation.
--         Returns {live, status, version}.
--   take:  KEYS 1 record, 2 caller index. ARGV 2 gen, 3 ringing only (1/0), 4 index entry.
--         Removes and returns {extra, state, version, gen} when it matches, else false.
--   get:   KEYS 1 record. Returns {extra, state, version, gen} or false.
local op = ARGV[1]
if op == 'open' then
  local r = append_mail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[3]),
    tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  if r[1] ~= 0 then return r end
  redis.call('HSET', KEYS[5], 'extra', ARGV[10], 'state', 'ringing', 'version', r[2], 'gen', ARGV[11])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
  redis.call('SADD', KEYS[6], ARGV[12])
  redis.call('PEXPIRE', KEYS[6], ARGV[3])
  local now = now_ms()
  local n = tonumber(ARGV[13])
  for i = 0, n - 1 do
    redis.call('ZADD', KEYS[7], now + tonumber(ARGV[15 + 2 * i]), ARGV[14 + 2 * i])
  end
  return r
elseif op == 'relay' then
  local step = ARGV[10]
  local live = 0
  local count = (#KEYS - 4) / 2
  for i = 0, count - 1 do
    local rec, idx = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
    if redis.call('EXISTS', rec) == 1 then
      live = 1
      if step == 'end' then
        redis.call('DEL', rec)
        redis.call('SREM', idx, ARGV[12 + i])
      elseif step == 'ack' then
        if redis.call('HGET', rec, 'state') == 'ringing' then redis.call('HSET', rec, 'state', 'acked') end
      elseif step == 'accept' then
        redis.call('HSET', rec, 'state', 'accepted')
      end
    end
  end
  if live == 0 and ARGV[11] == '1' then return {0, 1, 0} end
  local r = append_mail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], tonumber(ARGV[3]),
    tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
  return {live, r[1], r[2]}
elseif op == 'take' then
  local f = redis.call('HMGET', KEYS[1], 'extra', 'state', 'version', 'gen')
  if f[4] ~= ARGV[2] then return false end
  if ARGV[3] == '1' and f[2] == 'accepted' then return false end
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  return f
else
  local f = redis.call('HMGET', KEYS[1], 'extra', 'state', 'version', 'gen')
  if not f[4] then return false end
  return f
end
