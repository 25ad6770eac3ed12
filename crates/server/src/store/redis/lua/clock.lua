-- Prepended to every script (after `local PUBLISH = …`, PUBLISH or, on a Redis Cluster, the
-- sharded SPUBLISH): Redis's clock, in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
