-- Invitations (with mail.lua). A record is a hash: extra, state (ringing | acked | accepted),
-- version (the callee's mailbox version of the invitation), gen, mid (its msg-v3 id). The
-- caller's index lists its invitations (entries made by the caller of the script).
-- ARGV 1 op. The mail part (mail.lua's mail_at: MAIL_KEYS keys, MAIL_ARGS arguments) comes
-- first, from KEYS[1] and ARGV[2]; "M+n" below is the n-th key or argument after it.
--   open: KEYS M+1 record, M+2 caller index, M+3 timers. ARGV M+1 extra, M+2 gen, M+3 index
--         entry, M+4 timer count, then per timer: member, delay ms.
--         Mail, record and timers in one step. Returns what append_mail does.
--   relay: KEYS: then record and caller index per invitation. ARGV M+1 step (keep | ack |
--         accept | end), M+2 require live (1/0), then an index entry per invitation.
--         Returns {live, status, version, offline}.
--   take:  KEYS 1 record, 2 caller index. ARGV 2 gen, 3 ringing only (1/0), 4 index entry.
--         Removes and returns {extra, state, version, gen, mid} when it matches, else false.
--   get:   KEYS 1 record. Returns {extra, state, version, gen, mid} or false.
local op = ARGV[1]
local K, A = MAIL_KEYS, 1 + MAIL_ARGS
if op == 'open' then
  local mail = mail_at(1, 2)
  local r = append_mail(mail)
  if r[1] ~= 0 then return r end
  local rec, idx, timers = KEYS[K + 1], KEYS[K + 2], KEYS[K + 3]
  redis.call('HSET', rec, 'extra', ARGV[A + 1], 'state', 'ringing', 'version', r[2], 'gen', ARGV[A + 2],
    'mid', mail.id)
  redis.call('PEXPIRE', rec, mail.ttl_ms)
  redis.call('SADD', idx, ARGV[A + 3])
  redis.call('PEXPIRE', idx, mail.ttl_ms)
  local now = now_ms()
  local n = tonumber(ARGV[A + 4])
  for i = 0, n - 1 do
    redis.call('ZADD', timers, now + tonumber(ARGV[A + 6 + 2 * i]), ARGV[A + 5 + 2 * i])
  end
  return r
elseif op == 'relay' then
  local step = ARGV[A + 1]
  local live = 0
  local count = (#KEYS - K) / 2
  for i = 0, count - 1 do
    local rec, idx = KEYS[K + 1 + 2 * i], KEYS[K + 2 + 2 * i]
    if redis.call('EXISTS', rec) == 1 then
      live = 1
      if step == 'end' then
        redis.call('DEL', rec)
        redis.call('SREM', idx, ARGV[A + 3 + i])
      elseif step == 'ack' then
        if redis.call('HGET', rec, 'state') == 'ringing' then redis.call('HSET', rec, 'state', 'acked') end
      elseif step == 'accept' then
        redis.call('HSET', rec, 'state', 'accepted')
      end
    end
  end
  if live == 0 and ARGV[A + 2] == '1' then return {0, 1, 0} end
  local r = append_mail(mail_at(1, 2))
  return {live, r[1], r[2], r[3] or 0}
elseif op == 'take' then
  local f = redis.call('HMGET', KEYS[1], 'extra', 'state', 'version', 'gen', 'mid')
  if f[4] ~= ARGV[2] then return false end
  if ARGV[3] == '1' and f[2] == 'accepted' then return false end
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
  return f
else
  local f = redis.call('HMGET', KEYS[1], 'extra', 'state', 'version', 'gen', 'mid')
  if not f[4] then return false end
  return f
end
