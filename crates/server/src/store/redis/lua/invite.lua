-- Invitations (with mail.lua). A record is a hash: extra, state (ringing | acked | accepted),
-- version (the callee's mailbox version of the invitation; 0: not known), gen, mid (its
-- msg-v3 id). The caller's index lists its invitations (entries made by the caller of the
-- script). Records, the caller's index and the timers are in the caller's unit; a message
-- is in its recipient's: where the two differ, a step is two or three scripts (`record`
-- after the callee's mail; `records` to ask before the mail to the other party and to
-- change after it).
-- ARGV 1 op. The mail part (mail.lua's mail_at: MAIL_KEYS keys, MAIL_ARGS arguments) comes
-- first, from KEYS[1] and ARGV[2]; "M+n" below is the n-th key or argument after it.
--   open: KEYS M+1 record, M+2 caller index, M+3 timers. ARGV M+1 extra, M+2 gen, M+3 index
--         entry, M+4 timer count, then per timer: member, delay ms.
--         Mail, record and timers in one step. Returns what append_mail does.
--   record: (no mail part) KEYS 1 record, 2 caller index, 3 timers. ARGV 2 the callee's
--         mail's status, 3 its version, 4 offline (1/0), 5 extra, 6 gen, 7 index entry,
--         8 mid, 9 ttl ms, 10 timer count, then per timer: member, delay ms. The record of a
--         message stored (status 0), or of a resend whose record is missing (a failure
--         between the two scripts: its version not known); its events when it was stored.
--         Returns 1 when it wrote.
--   relay: KEYS: then record and caller index per invitation. ARGV M+1 step (keep | ack |
--         accept | end), M+2 require live (1/0), then an index entry per invitation.
--         Returns {live, status, version, offline}.
--   records: (no mail part) KEYS record and caller index per invitation. ARGV 2 step,
--         then an index entry per invitation. The step without the mail (keep: none, to ask
--         whether one is live); its events when it changed a record. Returns live (1/0).
--   take:  KEYS 1 record, 2 caller index. ARGV 2 gen, 3 ringing only (1/0), 4 index entry.
--         Removes and returns {extra, state, version, gen, mid} when it matches, else false.
--   get:   KEYS 1 record. Returns {extra, state, version, gen, mid} or false.
local op = ARGV[1]
local K, A = MAIL_KEYS, 1 + MAIL_ARGS

-- `step` on the `count` records from KEYS[k0 + 1] (record, caller index pairs), their index
-- entries from ARGV[a0 + 1]. Returns 1 when any of them exists, then 1 when it changed one.
local function apply(step, k0, a0, count)
  local live, changed = 0, 0
  for i = 0, count - 1 do
    local rec, idx = KEYS[k0 + 1 + 2 * i], KEYS[k0 + 2 + 2 * i]
    if redis.call('EXISTS', rec) == 1 then
      live = 1
      if step == 'end' then
        redis.call('DEL', rec)
        redis.call('SREM', idx, ARGV[a0 + 1 + i])
        changed = 1
      elseif step == 'ack' then
        if redis.call('HGET', rec, 'state') == 'ringing' then
          redis.call('HSET', rec, 'state', 'acked')
          changed = 1
        end
      elseif step == 'accept' then
        if redis.call('HGET', rec, 'state') ~= 'accepted' then changed = 1 end
        redis.call('HSET', rec, 'state', 'accepted')
      end
    end
  end
  return live, changed
end

-- A ringing record, its caller's index entry and its timers (ARGV from `a`: count, then
-- member and delay ms per timer), kept as long as the message.
local function ring(rec, idx, timers, fields, entry, ttl_ms, a)
  redis.call('HSET', rec, unpack(fields))
  redis.call('PEXPIRE', rec, ttl_ms)
  redis.call('SADD', idx, entry)
  redis.call('PEXPIRE', idx, ttl_ms)
  local now = now_ms()
  local n = tonumber(ARGV[a])
  for i = 0, n - 1 do
    redis.call('ZADD', timers, now + tonumber(ARGV[a + 2 + 2 * i]), ARGV[a + 1 + 2 * i])
  end
end

if op == 'open' then
  local mail = mail_at(1, 2)
  local r = append_mail(mail)
  if r[1] ~= 0 then return r end
  local fields = {'extra', ARGV[A + 1], 'state', 'ringing', 'version', r[2], 'gen', ARGV[A + 2],
    'mid', mail.id}
  ring(KEYS[K + 1], KEYS[K + 2], KEYS[K + 3], fields, ARGV[A + 3], mail.ttl_ms, A + 4)
  return r
elseif op == 'record' then
  local stored = ARGV[2] == '0'
  if not stored and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  local fields = {'extra', ARGV[5], 'state', 'ringing', 'version', ARGV[3], 'gen', ARGV[6],
    'mid', ARGV[8]}
  ring(KEYS[1], KEYS[2], KEYS[3], fields, ARGV[7], tonumber(ARGV[9]), 10)
  if stored then
    if ARGV[4] == '1' then outbox('offline') end
    outbox('done')
  end
  return 1
elseif op == 'relay' then
  local live = apply(ARGV[A + 1], K, A + 2, (#KEYS - K) / 2)
  if live == 0 and ARGV[A + 2] == '1' then return {0, 1, 0} end
  local r = append_mail(mail_at(1, 2))
  return {live, r[1], r[2], r[3] or 0}
elseif op == 'records' then
  local live, changed = apply(ARGV[2], 0, 2, #KEYS / 2)
  if changed == 1 then outbox('done') end
  return live
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
