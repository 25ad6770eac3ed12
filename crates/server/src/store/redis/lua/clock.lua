-- Prepended to every script (after `local PUBLISH = …`, PUBLISH or, on a Redis Cluster, the
-- sharded SPUBLISH): Redis's clock, in milliseconds, read once per call (a call is one
-- instant, as it is for Redis's own key expiry: every step of it happens at the same time).
local NOW_MS
local function now_ms()
  if not NOW_MS then
    local t = redis.call('TIME')
    NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return NOW_MS
end
