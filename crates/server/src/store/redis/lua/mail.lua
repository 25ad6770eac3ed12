-- Prepended to the scripts that store or drop mail. A mailbox is a sorted set (score =
-- version, member = "<expiry ms> <id> <text>") and a meta hash (last, cleared; kept and boxed:
-- until when the hash and the mailbox are kept, as set by the scripts; held: how many messages
-- the mailbox holds until boxed, so that storing one needs no ZCARD — a script that drops
-- messages writes it, or deletes it where it does not know it and the next message counts).
--
-- An app's ledger counts what all its mailboxes hold, for its quota, in two keys touched with
-- two commands per message. A hash: n (messages), b (text bytes), due (the end of its earliest
-- group), kept (until when it and its index are kept), and one field per group of messages
-- that expire within the same QUOTA_STEP_MS, 'e<end ms>' = "<messages> <bytes>"; and the
-- index of its groups (a sorted set, score = member = the group's end). A message leaves the
-- ledger when it leaves its mailbox, or with its group at the app's next message once the
-- group has ended (at most QUOTA_STEP_MS after it expired; its mailbox lets it go by itself).

-- A mailbox as a script gets it: KEYS[k ..] mailbox, meta, ledger, ledger's index;
-- ARGV[a] ms its numbering (meta) is kept after a message or poll.
local BOX_KEYS, BOX_ARGS = 4, 1
local function box_at(k, a)
  return {mb = KEYS[k], meta = KEYS[k + 1], ledger = KEYS[k + 2], index = KEYS[k + 3],
    keep_ms = ARGV[a]}
end

-- A message to store, as a script gets it: the box, then KEYS recipient's session, dedup key,
-- sender's offline window (both unused when their ARGV is 0); ARGV dedup window ms (0: no
-- dedup), ttl ms, max
-- messages, id, text, topic prefix, push before, push after, app's max messages, app's max
-- bytes, sender's allowance per window, window ms, busy (1/0). 0 means no cap.
local MAIL_KEYS, MAIL_ARGS = BOX_KEYS + 3, BOX_ARGS + 13
local function mail_at(k, a)
  local t = box_at(k, a)
  k, a = k + BOX_KEYS, a + BOX_ARGS
  t.session, t.dedup, t.window = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  t.dedup_ms, t.ttl_ms, t.max = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  t.id, t.text, t.topic = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  t.before, t.after = ARGV[a + 6], ARGV[a + 7]
  t.app_msgs, t.app_bytes = tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9])
  t.allowance, t.window_ms, t.busy = tonumber(ARGV[a + 10]), ARGV[a + 11], ARGV[a + 12] == '1'
  t.deduped = t.dedup_ms ~= '0'
  return t
end

-- Pushes to nodes: published at once, or, while PUSHES is a table (mail_append.lua's calls),
-- kept in order and published by push_flush when the call ends: one PUBLISH per topic, the
-- pushes of a topic bundled (publish_all).
local PUSHES
local function push(topic, msg)
  if not PUSHES then
    redis.call(PUBLISH, topic, msg)
    return
  end
  local l = PUSHES[topic]
  if not l then
    l = {}
    PUSHES[topic] = l
    PUSHES[#PUSHES + 1] = topic
  end
  l[#l + 1] = msg
end
local function push_flush()
  for _, topic in ipairs(PUSHES) do publish_all(topic, PUSHES[topic]) end
  PUSHES = {}
end

-- The app's ledger as this call has it. In a mail_append.lua call of several messages
-- (LEDGER_HELD: a call's messages are all of one app) the first message reads the fields it needs, the others read what this
-- call does not have yet, and every write waits for the call's end (ledger_flush): a call's
-- messages take two ledger commands together, not two each. Whatever else writes the ledger
-- (ledger_prune, ledger_release) writes what is held first and drops it. LG: {key, index,
-- f = field -> value (false: none; what the call wrote is kept as it wrote it, numbers and
-- a group's {messages, bytes}, and turned into text once, when written), dirty = field ->
-- true, expire_at = ms or nil}.
local LEDGER_HELD = false
local LG
-- A held ledger value as Redis keeps it.
local function ledger_text(v)
  if type(v) == 'number' then return string.format('%d', v) end
  if type(v) == 'table' then return string.format('%d %d', v[1], v[2]) end
  return v
end
local function ledger_flush()
  if not LG then return end
  local set = {}
  for f in pairs(LG.dirty) do set[#set + 1], set[#set + 2] = f, ledger_text(LG.f[f]) end
  if #set > 0 then redis.call('HSET', LG.key, unpack(set)) end
  if LG.expire_at then
    redis.call('PEXPIREAT', LG.key, LG.expire_at)
    redis.call('PEXPIREAT', LG.index, LG.expire_at)
  end
  LG = nil
end
local function ledger_held(box)
  if LG and LG.key ~= box.ledger then ledger_flush() end
  if not LG then LG = {key = box.ledger, index = box.index, f = {}, dirty = {}} end
  return LG
end
-- The ledger fields `fields` of `box`'s ledger (nil where there is none).
local function ledger_get(box, fields)
  if not LEDGER_HELD then return redis.call('HMGET', box.ledger, unpack(fields)) end
  local l = ledger_held(box)
  local missing = {}
  for _, f in ipairs(fields) do
    if l.f[f] == nil then missing[#missing + 1] = f end
  end
  if #missing > 0 then
    local got = redis.call('HMGET', box.ledger, unpack(missing))
    for i, f in ipairs(missing) do l.f[f] = got[i] or false end
  end
  local out = {}
  for i, f in ipairs(fields) do
    if l.f[f] then out[i] = l.f[f] end
  end
  return out
end
-- Set ledger fields (`set`: field, value, ...), and the ledger's and its index's expiry when
-- `expire_at` (written at once unless LEDGER_HELD).
local function ledger_put(box, set, expire_at)
  if not LEDGER_HELD then
    redis.call('HSET', box.ledger, unpack(set))
    if expire_at then
      redis.call('PEXPIREAT', box.ledger, expire_at)
      redis.call('PEXPIREAT', box.index, expire_at)
    end
    return
  end
  local l = ledger_held(box)
  for i = 1, #set, 2 do
    l.f[set[i]] = set[i + 1]
    l.dirty[set[i]] = true
  end
  if expire_at then l.expire_at = expire_at end
end

local function int(v) return string.format('%d', tonumber(v)) end
local function text_of(m) return string.match(m, '^%d+ %S+ (.*)$') or '' end
-- The end of the ledger group of a message expiring at ms `expiry` (always after it).
local function group_of(expiry)
  return int((math.floor(tonumber(expiry) / QUOTA_STEP_MS) + 1) * QUOTA_STEP_MS)
end
local function group_parse(held)
  if type(held) == 'table' then return held[1], held[2] end
  local n, b = string.match(held, '^(%d+) (%d+)$')
  return tonumber(n), tonumber(b)
end

-- Count out of the ledger messages that left their mailbox: `gone` maps a group's end to
-- {messages, bytes}. A group the ledger no longer has was counted out when it ended.
local function ledger_release(box, gone)
  ledger_flush()
  local fields, ends = {'n', 'b'}, {}
  for e in pairs(gone) do
    ends[#ends + 1] = e
    fields[#fields + 1] = 'e' .. e
  end
  if #ends == 0 then return end
  local got = redis.call('HMGET', box.ledger, unpack(fields))
  local n, b = tonumber(got[1] or '0'), tonumber(got[2] or '0')
  local set, del, ended, found = {}, {}, {}, false
  for i, e in ipairs(ends) do
    if got[i + 2] then
      found = true
      local gn, gb = group_parse(got[i + 2])
      gn, gb = gn - gone[e][1], gb - gone[e][2]
      n, b = n - gone[e][1], b - gone[e][2]
      if gn <= 0 then
        del[#del + 1], ended[#ended + 1] = 'e' .. e, e
      else
        set[#set + 1], set[#set + 2] = 'e' .. e, gn .. ' ' .. math.max(gb, 0)
      end
    end
  end
  if not found then return end
  set[#set + 1], set[#set + 2] = 'n', math.max(n, 0)
  set[#set + 1], set[#set + 2] = 'b', math.max(b, 0)
  redis.call('HSET', box.ledger, unpack(set))
  if #del > 0 then
    redis.call('HDEL', box.ledger, unpack(del))
    redis.call('ZREM', box.index, unpack(ended))
  end
end

-- Add mailbox member m to the groups to count out.
local function gone_add(gone, m)
  local e = group_of(string.match(m, '^(%d+) '))
  local g = gone[e] or {0, 0}
  g[1], g[2] = g[1] + 1, g[2] + #text_of(m)
  gone[e] = g
end

-- Drop mailbox members (read by this script, so there) and count them out of the ledger, in
-- slices of 1,000 (Lua's limit on a call's arguments). Returns how many it dropped.
local function drop_members(box, members)
  for from = 1, #members, 1000 do
    local slice, gone = {}, {}
    for i = from, math.min(from + 999, #members) do
      slice[#slice + 1] = members[i]
      gone_add(gone, members[i])
    end
    redis.call('ZREM', box.mb, unpack(slice))
    ledger_release(box, gone)
  end
  return #members
end

-- Drop every message of versions up to v: a fixed number of commands however many there are
-- (an acknowledgement covers every message since the last one), in slices of 1,000 (Lua's
-- limit on a call's arguments). `items`: those messages when the caller has read them.
-- Returns how many it dropped.
local function drop_mail_upto(box, v, items)
  items = items or redis.call('ZRANGEBYSCORE', box.mb, '-inf', v)
  if #items == 0 then return 0 end
  redis.call('ZREMRANGEBYSCORE', box.mb, '-inf', v)
  for from = 1, #items, 1000 do
    local gone = {}
    for i = from, math.min(from + 999, #items) do gone_add(gone, items[i]) end
    ledger_release(box, gone)
  end
  return #items
end

-- The meta hash outlives the last message or poll by the box's keep time, extended by an
-- eighth more at a time, so that a stream of messages or polls extends it once per eighth, not
-- at every one: adds 'kept' to the fields `set` writes when an extension is due (`kept`: the
-- field as read) and returns the expiry to give the hash then (nil: none due).
local function keep_due(set, now, keep_ms, kept)
  local keep = tonumber(keep_ms)
  if now + keep <= tonumber(kept or '0') then return nil end
  local ms = keep + math.floor(keep / 8)
  set[#set + 1], set[#set + 2] = 'kept', now + ms
  return ms
end

-- How many messages the mailbox holds: the meta hash's count while the mailbox is kept
-- (`meta_held`, `meta_boxed`: its fields as read), else counted.
local function held_in(box, now, meta_held, meta_boxed)
  local held = tonumber(meta_held)
  if held and now < tonumber(meta_boxed or '0') then return held end
  return redis.call('ZCARD', box.mb)
end

-- Count out the groups that have ended by `now` (up to 256 at a time) from the ledger's
-- n and b; returns n, b and due after.
local function ledger_prune(box, now, n, b)
  ledger_flush()
  local ends = redis.call('ZRANGEBYSCORE', box.index, '-inf', now, 'LIMIT', 0, 256)
  if #ends > 0 then
    local fields = {}
    for i, e in ipairs(ends) do fields[i] = 'e' .. e end
    for _, held in ipairs(redis.call('HMGET', box.ledger, unpack(fields))) do
      if held then
        local gn, gb = group_parse(held)
        n, b = n - gn, b - gb
      end
    end
    redis.call('HDEL', box.ledger, unpack(fields))
    redis.call('ZREM', box.index, unpack(ends))
  end
  n, b = math.max(n, 0), math.max(b, 0)
  local first = redis.call('ZRANGE', box.index, 0, 0, 'WITHSCORES')
  local due = tonumber(first[2])
  if due then
    redis.call('HSET', box.ledger, 'n', n, 'b', b, 'due', int(due))
  else
    redis.call('HSET', box.ledger, 'n', n, 'b', b)
    redis.call('HDEL', box.ledger, 'due')
  end
  return n, b, due
end

-- Store a message unless it is a resend (dedup key set within its window), the mailbox is
-- full after dropping expired messages, the app's ledger is at its quota, or the recipient
-- is offline and the server is busy or the sender's allowance for the window is used up.
-- Push it to the recipient's node (session value "node conn") as before .. version .. after.
-- Returns {0, version, 1 when the recipient has no session} stored, {1, 0} duplicate, {2, 0} full, {3, 0} app's quota,
-- {4, 0} sender's allowance, {5, 0} busy.
local function append_mail(t)
  local now = now_ms()
  if t.deduped then
    if not redis.call('SET', t.dedup, '1', 'NX', 'PX', t.dedup_ms) then return {1, 0} end
  end
  local function refuse(status)
    if t.deduped then redis.call('DEL', t.dedup) end
    return {status, 0}
  end
  -- the numbering, until when the meta hash itself and the mailbox are known to be kept, and
  -- what the mailbox holds
  local meta = redis.call('HMGET', t.meta, 'last', 'kept', 'boxed', 'held')
  local last = tonumber(meta[1] or '0')
  local held_here = held_in(t, now, meta[4], meta[3])
  if held_here >= t.max then
    local expired = {}
    for _, m in ipairs(redis.call('ZRANGE', t.mb, 0, -1)) do
      local exp = tonumber(string.match(m, '^(%d+) '))
      if exp and exp <= now then expired[#expired + 1] = m end
    end
    drop_members(t, expired)
    held_here = redis.call('ZCARD', t.mb)
    -- counted: a refusal below leaves it right
    redis.call('HSET', t.meta, 'held', held_here)
  end
  if held_here >= t.max or last >= 9007199254740991 then return refuse(2) end
  -- the app's ledger, its groups that have ended counted out first (again, while they stand
  -- between this message and the quota)
  local group = group_of(now + t.ttl_ms)
  local ledger = ledger_get(t, {'n', 'b', 'due', 'kept', 'e' .. group})
  local n, b, due = tonumber(ledger[1] or '0'), tonumber(ledger[2] or '0'), tonumber(ledger[3])
  local function over_quota()
    return (t.app_msgs > 0 and n >= t.app_msgs)
      or (t.app_bytes > 0 and b + #t.text > t.app_bytes)
  end
  for _ = 1, 8 do
    if not (due and due <= now) then break end
    n, b, due = ledger_prune(t, now, n, b)
    if not over_quota() then break end
  end
  if over_quota() then return refuse(3) end
  -- the recipient's session (read for the whole call by mail_append.lua: false when none)
  local s = t.session_is
  if s == nil then s = redis.call('GET', t.session) end
  if not s then s = nil end
  if not s then
    if t.busy then return refuse(5) end
    if t.allowance > 0 then
      if tonumber(redis.call('GET', t.window) or '0') >= t.allowance then return refuse(4) end
      if redis.call('INCR', t.window) == 1 then redis.call('PEXPIRE', t.window, t.window_ms) end
    end
  end
  last = last + 1
  local expiry = now + t.ttl_ms
  -- each key outlives its last message (the meta hash: keep_due's); extended by an eighth
  -- more at a time, so a stream of messages extends it once per eighth, not at every message.
  -- The meta hash notes until when it and the mailbox are kept ('kept', 'boxed': a hash made
  -- anew has neither, and an empty mailbox is a new key), so that knowing costs nothing.
  local set = {'last', last, 'held', held_here + 1}
  local kept = keep_due(set, now, t.keep_ms, meta[2])
  local boxed = held_here == 0 or expiry > tonumber(meta[3] or '0')
  local box_ms = t.ttl_ms + math.floor(t.ttl_ms / 8)
  if boxed then set[#set + 1], set[#set + 2] = 'boxed', now + box_ms end
  redis.call('HSET', t.meta, unpack(set))
  if kept then redis.call('PEXPIRE', t.meta, kept) end
  redis.call('ZADD', t.mb, last, expiry .. ' ' .. t.id .. ' ' .. t.text)
  if boxed then redis.call('PEXPIRE', t.mb, box_ms) end
  -- counted in its group; the ledger and its index outlive their last message like the
  -- mailbox, extended by an eighth more at a time
  local gn, gb = 0, 0
  if ledger[5] then gn, gb = group_parse(ledger[5]) end
  local held_as
  if LEDGER_HELD then
    held_as = {gn + 1, gb + #t.text}
  else
    held_as = (gn + 1) .. ' ' .. (gb + #t.text)
  end
  local lset = {'n', n + 1, 'b', b + #t.text, 'e' .. group, held_as}
  local ledger_kept = tonumber(ledger[4] or '0')
  if not ledger[5] then
    redis.call('ZADD', t.index, group, group)
    if not due or tonumber(group) < due then lset[#lset + 1], lset[#lset + 2] = 'due', group end
  end
  if expiry > ledger_kept then
    ledger_kept = now + box_ms
    lset[#lset + 1], lset[#lset + 2] = 'kept', ledger_kept
  end
  local expire = ledger_kept ~= tonumber(ledger[4] or '0') or not ledger[5]
  ledger_put(t, lset, expire and ledger_kept or nil)
  if s then
    local node = string.match(s, '^(%S+) ')
    if node then push(t.topic .. node, t.before .. last .. t.after) end
  end
  if not s then outbox('offline') end
  outbox('done')
  return {0, last, s and 0 or 1}
end
