-- Messages of one app, stored in one call in their order (a node sends the messages that came
-- while the app's previous call ran together, so Redis runs one script for all of them).
-- ARGV[1] the count; then per message its KEYS and ARGV (mail.lua's mail_at), then in ARGV the
-- count of its events e and, when e > 0, e (when, event) pairs and the log's caps (max events,
-- max bytes, max age ms), in KEYS e (stream, meta) pairs. Returns {status, version, offline}
-- per message (append_mail's). The pushes to each node go in one PUBLISH at the end.
local out = {}
PUSHES = {}
local k, a = 1, 2
for _ = 1, tonumber(ARGV[1]) do
  local t = mail_at(k, a)
  k, a = k + MAIL_KEYS, a + MAIL_ARGS
  local e = tonumber(ARGV[a])
  a = a + 1
  OUTBOX = {}
  for i = 1, e do
    OUTBOX[i] = {when = ARGV[a], event = ARGV[a + 1], stream = KEYS[k], meta = KEYS[k + 1]}
    a, k = a + 2, k + 2
  end
  if e > 0 then
    OUTBOX_CAP = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])}
    a = a + 3
  end
  local r = append_mail(t)
  out[#out + 1], out[#out + 2], out[#out + 3] = r[1], r[2], r[3] or 0
end
push_flush()
return out
