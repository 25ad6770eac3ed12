-- Shared by the channel scripts (prepended to each). Channel KEYS: 1 members zset (score =
-- join order), 2 join counter, 3 member -> "node conn" hash, 4 node -> local member count hash,
-- 5 attributes hash, 6 sequence, 7 "membership changed" flag, 8 rate-limit key base.
-- ARGV: 1 app, 2 channel, 3 node topic prefix, then per script.
local APP, CH, TOPIC = ARGV[1], ARGV[2], ARGV[3]

local function now_parts()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A token bucket of `rate` per second with a burst of one second's worth (as the memory
-- engine's `Bucket`): true when one token could be taken. Kept as a hash {t = tokens,
-- ms = last update}; it expires once it would be full again anyway.
local function take_token(key, rate)
  local _, now = now_parts()
  local b = redis.call('HMGET', key, 't', 'ms')
  local tokens, last = tonumber(b[1]) or rate, tonumber(b[2]) or now
  tokens = math.min(rate, tokens + (now - last) * rate / 1000)
  if tokens < 1 then
    redis.call('HSET', key, 't', tostring(tokens), 'ms', now)
    redis.call('PEXPIRE', key, 2000)
    return false
  end
  redis.call('HSET', key, 't', tostring(tokens - 1), 'ms', now)
  redis.call('PEXPIRE', key, 2000)
  return true
end

-- Sequence a channel event and publish it once to every node that has members there.
local function broadcast(exclude, source, kind, content)
  local seq = redis.call('INCR', KEYS[6])
  local payload = 'c ' .. APP .. ' ' .. CH .. ' ' .. seq .. ' ' .. exclude .. ' ' .. source .. ' ' .. kind .. ' ' .. content
  for _, n in ipairs(redis.call('HKEYS', KEYS[4])) do
    redis.call('PUBLISH', TOPIC .. n, payload)
  end
  return seq
end

-- An empty, ordinary channel keeps its state for _channel_ttl seconds, then it is gone.
local function expire_if_empty(special, default_ttl)
  if special == '1' or redis.call('ZCARD', KEYS[1]) > 0 then return end
  local ttl = tonumber(redis.call('HGET', KEYS[5], '_channel_ttl') or default_ttl) or tonumber(default_ttl)
  if ttl < 1 then ttl = 1 end
  for i = 1, 7 do redis.call('PEXPIRE', KEYS[i], ttl * 1000) end
end

local function keep()
  for i = 1, 7 do redis.call('PERSIST', KEYS[i]) end
end
