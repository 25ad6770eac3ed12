-- ARGV after the common ones: +0 op.
--   settings: {exists (1/0), notify, ttl, msg_rate, attr_rate, auto}
--   touch:    count the membership as changed (the flag expires with the channel)
--   take:     the member count if the membership changed since the last take, else false
--   unlist:   out of the app's channels with members, if it has none (a listing found it so)
--   history:  +1 after (message number), +2 oldest (ms): {latest message number, then per
--             kept message after `after`, of the latest `history` kept, and not older:
--             n, t, s, f, m, i ('' when none)}
local op = ARGV[FIRST]
if op == 'unlist' then
  if redis.call('ZCARD', MEMBERS) == 0 then redis.call('ZREM', OCCUPIED, NAME) end
  return 0
end
local exists = redis.call('EXISTS', MEMBERS) + redis.call('EXISTS', ATTRS) + redis.call('EXISTS', HIST)
if op == 'settings' then
  return {exists, setting('notify'), setting('ttl'), setting('msg_rate'), setting('attr_rate'),
    setting('auto'), setting('history')}
elseif op == 'history' then
  local out = {tonumber(redis.call('HGET', HMETA, 'n') or '0')}
  local oldest = tonumber(ARGV[FIRST + 2])
  local size = tonumber(setting('history')) or 0
  local latest = {}
  if size > 0 then
    latest = redis.call('XREVRANGE', HIST, '+', (tonumber(ARGV[FIRST + 1]) + 1) .. '-0', 'COUNT', size)
  end
  for k = #latest, 1, -1 do
    local e = latest[k]
    local f = {}
    for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
    if tonumber(f.t) >= oldest then
      out[#out + 1] = string.match(e[1], '^(%d+)')
      out[#out + 1] = f.t
      out[#out + 1] = f.s
      out[#out + 1] = f.f
      out[#out + 1] = f.m
      out[#out + 1] = f.i or ''
    end
  end
  return out
elseif op == 'touch' then
  if exists == 0 then return 0 end
  redis.call('SET', CHANGED, '1')
  local ttl = redis.call('PTTL', ATTRS)
  if redis.call('ZCARD', MEMBERS) == 0 and ttl > 0 then redis.call('PEXPIRE', CHANGED, ttl) end
  return 1
else
  if redis.call('GETDEL', CHANGED) then return redis.call('ZCARD', MEMBERS) end
  return false
end
