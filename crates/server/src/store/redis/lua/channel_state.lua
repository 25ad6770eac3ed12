-- ARGV after the common ones: +0 op.
--   settings: {exists (1/0), notify, ttl, msg_rate, attr_rate, auto}
--   touch:    count the membership as changed (the flag expires with the channel)
--   take:     the member count if the membership changed since the last take, else false
local op = ARGV[FIRST]
local exists = redis.call('EXISTS', MEMBERS) + redis.call('EXISTS', ATTRS)
if op == 'settings' then
  return {exists, setting('notify'), setting('ttl'), setting('msg_rate'), setting('attr_rate'), setting('auto')}
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
