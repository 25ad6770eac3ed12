-- Prepended to the scripts that store or drop mail. A mailbox is a sorted set (score =
-- version, member = "<expiry ms> <id> <text>") and a meta hash (last, cleared; kept and boxed:
-- until when the hash and the mailbox are kept, as set by the scripts). An app's
-- ledger counts what all its mailboxes hold: a sorted set (score = expiry ms, member =
-- "<version> <text bytes> <account>") and the total of its text bytes. A message leaves the
-- ledger when it leaves its mailbox, or once it has expired (its mailbox lets it go by itself).

-- A mailbox as a script gets it: KEYS[k ..] mailbox, meta, ledger, ledger bytes;
-- ARGV[a] the account, ARGV[a + 1] ms its numbering (meta) is kept after a message or poll.
local BOX_KEYS, BOX_ARGS = 4, 2
local function box_at(k, a)
  return {mb = KEYS[k], meta = KEYS[k + 1], ledger = KEYS[k + 2], bytes = KEYS[k + 3],
    account = ARGV[a], keep_ms = ARGV[a + 1]}
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

local function int(v) return string.format('%d', tonumber(v)) end
local function text_of(m) return string.match(m, '^%d+ %S+ (.*)$') or '' end

-- Drop mailbox member m of version v, and its ledger entry.
local function drop_mail(box, m, v)
  if redis.call('ZREM', box.mb, m) == 1 then
    local size = #text_of(m)
    if redis.call('ZREM', box.ledger, int(v) .. ' ' .. size .. ' ' .. box.account) == 1 then
      redis.call('DECRBY', box.bytes, size)
    end
  end
end

-- Drop every message of versions up to v: a fixed number of commands however many there are
-- (an acknowledgement covers every message since the last one), in slices of 1,000 (Lua's
-- limit on a call's arguments).
local function drop_mail_upto(box, v)
  local items = redis.call('ZRANGEBYSCORE', box.mb, '-inf', v, 'WITHSCORES')
  if #items == 0 then return end
  redis.call('ZREMRANGEBYSCORE', box.mb, '-inf', v)
  for from = 1, #items, 2000 do
    local entries, sizes = {}, {}
    for i = from, math.min(from + 1998, #items - 1), 2 do
      local size = #text_of(items[i])
      entries[#entries + 1] = int(items[i + 1]) .. ' ' .. size .. ' ' .. box.account
      sizes[#sizes + 1] = size
    end
    -- the ledger entries still there (one that expired may have been pruned, its bytes with it)
    local held, gone = redis.call('ZMSCORE', box.ledger, unpack(entries)), 0
    local drop = {}
    for i, score in ipairs(held) do
      if score then
        drop[#drop + 1] = entries[i]
        gone = gone + sizes[i]
      end
    end
    if #drop > 0 then
      redis.call('ZREM', box.ledger, unpack(drop))
      redis.call('DECRBY', box.bytes, gone)
    end
  end
end

-- Forget up to n ledger entries that have expired.
local function ledger_prune(box, now, n)
  for _, e in ipairs(redis.call('ZRANGEBYSCORE', box.ledger, '-inf', now, 'LIMIT', 0, n)) do
    redis.call('ZREM', box.ledger, e)
    redis.call('DECRBY', box.bytes, tonumber(string.match(e, '^%S+ (%d+) ')))
  end
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
  local held_here = redis.call('ZCARD', t.mb)
  if held_here >= t.max then
    local items = redis.call('ZRANGE', t.mb, 0, -1, 'WITHSCORES')
    for i = 1, #items, 2 do
      local exp = tonumber(string.match(items[i], '^(%d+) '))
      if exp and exp <= now then drop_mail(t, items[i], items[i + 1]) end
    end
    held_here = redis.call('ZCARD', t.mb)
  end
  -- the numbering, and until when the meta hash itself and the mailbox are known to be kept
  local meta = redis.call('HMGET', t.meta, 'last', 'kept', 'boxed')
  local last = tonumber(meta[1] or '0')
  if held_here >= t.max or last >= 9007199254740991 then return refuse(2) end
  -- expired ledger entries are forgotten (up to 256 at a time) at about one message in 16 —
  -- those stored in a millisecond divisible by 16, so they cannot pile up — and whenever they
  -- stand between a message and the app's quota
  local function over_quota()
    if t.app_msgs > 0 and redis.call('ZCARD', t.ledger) >= t.app_msgs then return true end
    if t.app_bytes > 0 then
      return tonumber(redis.call('GET', t.bytes) or '0') + #t.text > t.app_bytes
    end
    return false
  end
  local pruned = now % 16 == 0
  if pruned then ledger_prune(t, now, 256) end
  if over_quota() then
    if pruned then return refuse(3) end
    ledger_prune(t, now, 256)
    if over_quota() then return refuse(3) end
  end
  local s = redis.call('GET', t.session)
  if not s then
    if t.busy then return refuse(5) end
    if t.allowance > 0 then
      if tonumber(redis.call('GET', t.window) or '0') >= t.allowance then return refuse(4) end
      if redis.call('INCR', t.window) == 1 then redis.call('PEXPIRE', t.window, t.window_ms) end
    end
  end
  last = last + 1
  local expiry = now + t.ttl_ms
  -- each key outlives its last message (the meta hash: by the keep time); extended by an eighth
  -- more at a time, so a stream of messages extends it once per eighth, not at every message.
  -- The meta hash notes until when it and the mailbox are kept ('kept', 'boxed': a hash made
  -- anew has neither, and an empty mailbox is a new key), so that knowing costs nothing.
  local keep = tonumber(t.keep_ms)
  local set = {'last', last}
  local kept = now + keep > tonumber(meta[2] or '0')
  if kept then set[#set + 1], set[#set + 2] = 'kept', now + keep + math.floor(keep / 8) end
  local boxed = held_here == 0 or expiry > tonumber(meta[3] or '0')
  local box_ms = t.ttl_ms + math.floor(t.ttl_ms / 8)
  if boxed then set[#set + 1], set[#set + 2] = 'boxed', now + box_ms end
  redis.call('HSET', t.meta, unpack(set))
  if kept then redis.call('PEXPIRE', t.meta, keep + math.floor(keep / 8)) end
  redis.call('ZADD', t.mb, last, expiry .. ' ' .. t.id .. ' ' .. t.text)
  if boxed then redis.call('PEXPIRE', t.mb, box_ms) end
  redis.call('ZADD', t.ledger, expiry, int(last) .. ' ' .. #t.text .. ' ' .. t.account)
  redis.call('INCRBY', t.bytes, #t.text)
  -- the app's ledger and byte total are every mailbox's: asked
  for _, key in ipairs({t.ledger, t.bytes}) do
    if redis.call('PTTL', key) < t.ttl_ms then redis.call('PEXPIRE', key, box_ms) end
  end
  if s then
    local node = string.match(s, '^(%S+) ')
    if node then redis.call(PUBLISH, t.topic .. node, t.before .. last .. t.after) end
  end
  if not s then outbox('offline') end
  outbox('done')
  return {0, last, s and 0 or 1}
end
