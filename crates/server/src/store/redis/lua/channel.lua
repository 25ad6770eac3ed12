-- Prepended to the channel scripts. Channel KEYS, in this order (ChannelKeys::all):
local MEMBERS, ORDER, LOCATION, NODES, ATTRS, SETTINGS, SEQ, CHANGED =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local LEDGER, LEDGER_BYTES, LEDGER_TOTAL = KEYS[9], KEYS[10], KEYS[11]
local HIST, HMETA, MSG_RATE, OCCUPIED = KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local TIMERS, OWN = KEYS[16], KEYS[17]
-- MEMBERS: account -> join order; ORDER: join counter; LOCATION: account -> "node conn";
-- NODES: node -> members there; ATTRS: attributes; SETTINGS: notify, ttl, msg_rate,
-- attr_rate, auto, history; SEQ: event sequence; CHANGED: membership changed.
-- HIST: kept messages (a stream, ids '<n>-0', fields t, s, f, m); HMETA: n = the latest
-- message number, b = bytes of kept text. MSG_RATE: the message rate bucket. OCCUPIED: the
-- app's channels that have members (score 0, member = name: listed by name). TIMERS: the
-- cluster's timers (store::Timer). OWN: the one key of the script's own (join, leave: the
-- node's index of its memberships; publish: the resend marker; attr: the attribute's rate
-- bucket; otherwise the app's unused key). KEYS after it: the script's (join's).
-- The app's ledger of channels with attributes: LEDGER: channel -> when its state expires
-- (ms; NEVER while it has members); LEDGER_BYTES: channel -> bytes of its attributes' names
-- and values; LEDGER_TOTAL: their sum. A channel leaves it when its attributes go, or once
-- its state has expired (its keys go by themselves).
-- ARGV 1..12 of every channel script: topic prefix, the default settings
-- (notify, ttl, msg_rate, attr_rate, auto), the channel's name, the default history size,
-- seconds an empty channel with kept messages (and no attributes) is kept, the channel's
-- expiry timer (encoded; due when an empty channel's attributes go by themselves), the
-- sequence and message number the calling member saw of the channel (0: none;
-- opensig_protocol::frame::Seen).
local TOPIC = ARGV[1]
local DEFAULTS = {notify = ARGV[2], ttl = ARGV[3], msg_rate = ARGV[4], attr_rate = ARGV[5],
  auto = ARGV[6], history = ARGV[8]}
local NAME = ARGV[7]
local KEEP_EMPTY = tonumber(ARGV[9])
local EXPIRED = ARGV[10]
local SEEN_SEQ, SEEN_MSG = tonumber(ARGV[11]), tonumber(ARGV[12])
local FIRST = 13
local NEVER = 9007199254740991

local function setting(name)
  return redis.call('HGET', SETTINGS, name) or DEFAULTS[name]
end

-- A token bucket of `rate` per second with a burst of one second's worth: true when a token
-- could be taken. Kept as {t = tokens, ms = last update}; it expires once full again.
local function take_token(key, rate)
  local now = now_ms()
  local b = redis.call('HMGET', key, 't', 'ms')
  local tokens, last = tonumber(b[1]) or rate, tonumber(b[2]) or now
  tokens = math.min(rate, tokens + (now - last) * rate / 1000)
  local ok = tokens >= 1
  if ok then tokens = tokens - 1 end
  redis.call('HSET', key, 't', tostring(tokens), 'ms', now)
  redis.call('PEXPIRE', key, 2000)
  return ok
end

-- A channel number `current` caught up to `seen`, what the calling member saw: the channel
-- goes on from `seen` when that is ahead by at most CATCH_UP_MAX (store::catch_up's rule: a
-- failover lost the writes that used the numbers, which members would skip if handed out
-- again).
local function catch_up(current, seen)
  if seen > current and seen - current <= CATCH_UP_MAX then return seen end
  return current
end

-- The next value of counter `key` (field `field` of a hash when given), caught up to `seen`.
local function next_number(key, field, seen)
  local n
  if field then n = redis.call('HINCRBY', key, field, 1) else n = redis.call('INCR', key) end
  local caught = catch_up(n - 1, seen)
  if caught >= n then
    if field then
      n = redis.call('HINCRBY', key, field, caught + 1 - n)
    else
      n = redis.call('INCRBY', key, caught + 1 - n)
    end
  end
  return n
end

-- Both counters caught up to what the member saw (a rejoin: before its own event, and so
-- that its reply's latest message number is not below what it saw). Two reads when it saw
-- anything.
local function catch_up_all()
  if SEEN_SEQ > 0 then
    local cur = tonumber(redis.call('GET', SEQ) or '0')
    local caught = catch_up(cur, SEEN_SEQ)
    if caught > cur then redis.call('INCRBY', SEQ, caught - cur) end
  end
  if SEEN_MSG > 0 then
    local cur = tonumber(redis.call('HGET', HMETA, 'n') or '0')
    local caught = catch_up(cur, SEEN_MSG)
    if caught > cur then redis.call('HINCRBY', HMETA, 'n', caught - cur) end
  end
end

-- Sequence an event and publish it once to every node with members: before .. seq .. after
-- (.. extra: a message's number field). `lead`: {node, message} for that node to have just
-- before the event (a join's or leave's own message to the member's node): in one bundle
-- with it, or alone when that node gets no event.
local function publish(before, after, extra, lead)
  local seq = next_number(SEQ, nil, SEEN_SEQ)
  local msg = before .. seq .. after .. (extra or '')
  for _, n in ipairs(redis.call('HKEYS', NODES)) do
    if lead and n == lead[1] then
      publish_all(TOPIC .. n, {lead[2], msg})
      lead = nil
    else
      publish_all(TOPIC .. n, {msg})
    end
  end
  if lead then publish_all(TOPIC .. lead[1], {lead[2]}) end
  return seq
end

-- A member joined or left: its event (before .. seq .. after) when the caller has one
-- (`before` ~= '') and the channel's notify setting is on; `lead` (publish's) goes to the
-- member's node either way.
local function member_event(before, after, lead)
  if before ~= '' and setting('notify') ~= '0' then
    publish(before, after, nil, lead)
  else
    publish_all(TOPIC .. lead[1], {lead[2]})
  end
end

-- Drop kept messages beyond `size`, older than `oldest` (ms) or past `max_bytes` of text,
-- the oldest first, in one pass over the oldest entries.
local function trim_history(size, oldest, max_bytes)
  local bytes = tonumber(redis.call('HGET', HMETA, 'b') or '0')
  local len = redis.call('XLEN', HIST)
  local drop = {}
  local batch = math.max(len - size, 16)
  while len > 0 do
    local entries = redis.call('XRANGE', HIST, '-', '+', 'COUNT', batch + #drop)
    local done = #entries <= #drop
    for i = #drop + 1, #entries do
      local f = entries[i][2]
      local t, n = 0, 0
      for j = 1, #f, 2 do
        if f[j] == 't' then t = tonumber(f[j + 1]) elseif f[j] == 'm' then n = #f[j + 1] end
      end
      if len <= size and bytes <= max_bytes and t >= oldest then
        done = true
        break
      end
      drop[#drop + 1] = entries[i][1]
      len = len - 1
      bytes = bytes - n
    end
    if done or #entries < batch + #drop then break end
  end
  if #drop > 0 then redis.call('XDEL', HIST, unpack(drop)) end
  if len == 0 then
    redis.call('DEL', HIST)
    bytes = 0
  end
  redis.call('HSET', HMETA, 'b', bytes)
end

local CHANNEL_KEYS = {MEMBERS, ORDER, LOCATION, NODES, ATTRS, SETTINGS, SEQ, CHANGED, HIST, HMETA}

-- The channel's state in the ledger: expiring at `at` (ms), or out of it without attributes.
local function ledger_expiry(at)
  if redis.call('HLEN', ATTRS) > 0 then
    redis.call('ZADD', LEDGER, at, NAME)
  elseif redis.call('ZREM', LEDGER, NAME) == 1 then
    local b = tonumber(redis.call('HGET', LEDGER_BYTES, NAME) or '0')
    redis.call('HDEL', LEDGER_BYTES, NAME)
    redis.call('DECRBY', LEDGER_TOTAL, b)
  end
end

-- The channel's attributes grew by `delta` bytes (negative: shrank).
local function ledger_add(delta)
  if delta == 0 then return end
  redis.call('HINCRBY', LEDGER_BYTES, NAME, delta)
  redis.call('INCRBY', LEDGER_TOTAL, delta)
end

-- Forget up to n channels whose state has expired.
local function ledger_prune(now, n)
  for _, ch in ipairs(redis.call('ZRANGEBYSCORE', LEDGER, '-inf', now, 'LIMIT', 0, n)) do
    local b = tonumber(redis.call('HGET', LEDGER_BYTES, ch) or '0')
    redis.call('ZREM', LEDGER, ch)
    redis.call('HDEL', LEDGER_BYTES, ch)
    redis.call('DECRBY', LEDGER_TOTAL, b)
  end
  if redis.call('ZCARD', LEDGER) == 0 then redis.call('DEL', LEDGER_TOTAL, LEDGER_BYTES) end
end

-- An empty channel: gone at once without attributes or kept messages; kept for its ttl
-- with attributes, for KEEP_EMPTY with kept messages only. `known_empty`: the caller has
-- just counted no members.
local function if_empty(known_empty)
  if not known_empty and redis.call('ZCARD', MEMBERS) > 0 then
    ledger_expiry(NEVER)
    return
  end
  redis.call('ZREM', OCCUPIED, NAME)
  local attrs = redis.call('HLEN', ATTRS)
  if attrs == 0 and redis.call('EXISTS', HIST) == 0 then
    redis.call('DEL', MSG_RATE, unpack(CHANNEL_KEYS))
    ledger_expiry(0)
    redis.call('ZREM', TIMERS, EXPIRED)
    return
  end
  local ttl = tonumber(setting('ttl')) or tonumber(DEFAULTS.ttl)
  if attrs == 0 then ttl = KEEP_EMPTY end
  if ttl < 1 then ttl = 1 end
  for _, k in ipairs(CHANNEL_KEYS) do redis.call('PEXPIRE', k, ttl * 1000) end
  local at = now_ms() + ttl * 1000
  ledger_expiry(at)
  if attrs > 0 then
    redis.call('ZADD', TIMERS, at, EXPIRED)
  else
    redis.call('ZREM', TIMERS, EXPIRED)
  end
end

-- The channel's first member came.
local function keep()
  redis.call('ZADD', OCCUPIED, 0, NAME)
  for _, k in ipairs(CHANNEL_KEYS) do redis.call('PERSIST', k) end
  if redis.call('HLEN', ATTRS) > 0 then redis.call('ZADD', LEDGER, NEVER, NAME) end
  redis.call('ZREM', TIMERS, EXPIRED)
end
