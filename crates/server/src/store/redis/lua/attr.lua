-- ARGV after the common ones: +0 op (set|del|clear), +1 name, +2 value, +3 setting field
-- ('' = none), +4 setting value, +5 rate limited (1/0: by the attribute's bucket, OWN), +6 max attributes, +7 event before,
-- +8 event after, +9 the app's most channels with attributes, +10 the app's most attribute
-- bytes (0: no cap). Returns 'done', 'rate_limited', 'too_many' or 'app_full'.
local op, name, value = ARGV[FIRST], ARGV[FIRST + 1], ARGV[FIRST + 2]
local field, fvalue = ARGV[FIRST + 3], ARGV[FIRST + 4]
-- the history's size changes: first drop what readers no longer saw (publishes trim in
-- batches), so a larger size does not bring it back
local resize = field == 'history' or op == 'clear'
if resize then trim_history(tonumber(setting('history')) or 0, 0, NEVER) end
if op == 'set' then
  if ARGV[FIRST + 5] == '1' then
    local limit = tonumber(setting('attr_rate')) or 0
    if limit > 0 and not take_token(OWN, limit) then return 'rate_limited' end
  end
  local old = redis.call('HGET', ATTRS, name)
  if not old and redis.call('HLEN', ATTRS) >= tonumber(ARGV[FIRST + 6]) then
    return 'too_many'
  end
  local delta = #value - (old and #old or -#name)
  local max_channels, max_bytes = tonumber(ARGV[FIRST + 9]), tonumber(ARGV[FIRST + 10])
  ledger_prune(now_ms(), 256)
  local fresh = redis.call('HLEN', ATTRS) == 0
  if fresh and max_channels > 0 and redis.call('ZCARD', LEDGER) >= max_channels then
    return 'app_full'
  end
  local total = tonumber(redis.call('GET', LEDGER_TOTAL) or '0')
  if delta > 0 and max_bytes > 0 and total + delta > max_bytes then return 'app_full' end
  redis.call('HSET', ATTRS, name, value)
  if fresh then
    -- a channel whose earlier state expired starts from nothing in the ledger
    local stale = tonumber(redis.call('HGET', LEDGER_BYTES, NAME) or '0')
    if stale ~= 0 then ledger_add(-stale) end
  end
  ledger_add(delta)
  if field ~= '' then redis.call('HSET', SETTINGS, field, fvalue) end
elseif op == 'del' then
  local old = redis.call('HGET', ATTRS, name)
  if old then
    redis.call('HDEL', ATTRS, name)
    ledger_add(-(#name + #old))
  end
  if field ~= '' then redis.call('HSET', SETTINGS, field, fvalue) end
else
  redis.call('DEL', ATTRS, SETTINGS)
end
if resize then trim_history(tonumber(setting('history')) or 0, 0, NEVER) end
publish(ARGV[FIRST + 7], ARGV[FIRST + 8])
outbox('done')
if_empty()
return 'done'
