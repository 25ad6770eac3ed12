-- Messages of one app, stored in one call in their order (a node sends the messages that came
-- while the app's previous call ran together, so Redis runs one script for all of them).
-- ARGV[1] the count; then per message its KEYS and ARGV (mail.lua's mail_at), then in ARGV the
-- count of its events e and, when e > 0, e (when, event) pairs and the log's caps (max events,
-- max bytes, max age ms), in KEYS e (stream, meta) pairs (at most 64 messages: MGET of their
-- sessions stays within Lua's limit on a call's arguments). Returns {status, version, offline}
-- per message (append_mail's). The pushes to each node go in one PUBLISH at the end, and
-- the app's ledger is written once (mail.lua's LEDGER_HELD).
local out = {}
PUSHES = {}
local count = tonumber(ARGV[1])
-- a call of several messages holds the ledger's writes until it ends, and reads the
-- recipients' sessions in one command (storing mail changes none of them); a call of one
-- runs as any other script
LEDGER_HELD = count > 1
local sessions
if count > 1 then
  local keys, k, a = {}, 1, 2
  for i = 1, count do
    keys[i] = KEYS[k + BOX_KEYS]
    k, a = k + MAIL_KEYS, a + MAIL_ARGS
    local e = tonumber(ARGV[a])
    k, a = k + 2 * e, a + 1 + 2 * e + (e > 0 and 3 or 0)
  end
  sessions = redis.call('MGET', unpack(keys))
end
local k, a = 1, 2
for i = 1, count do
  local t = mail_at(k, a)
  if sessions then t.session_is = sessions[i] end
  k, a = k + MAIL_KEYS, a + MAIL_ARGS
  local e = tonumber(ARGV[a])
  a = a + 1
  OUTBOX = {}
  for j = 1, e do
    OUTBOX[j] = {when = ARGV[a], event = ARGV[a + 1], stream = KEYS[k], meta = KEYS[k + 1]}
    a, k = a + 2, k + 2
  end
  if e > 0 then
    OUTBOX_CAP = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])}
    a = a + 3
  end
  local r = append_mail(t)
  out[#out + 1], out[#out + 2], out[#out + 3] = r[1], r[2], r[3] or 0
end
ledger_flush()
push_flush()
return out
