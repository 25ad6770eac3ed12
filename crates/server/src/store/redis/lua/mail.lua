-- Prepended to the scripts that store mail. A mailbox is a sorted set (score = version,
-- member = "<expiry ms> <id> <text>") and a meta hash (last, cleared).

-- Store a message unless it is a resend (dedup key set within its window) or the mailbox is
-- full after dropping expired messages; push it to the recipient's node (session value
-- "node conn") as push_before .. version .. push_after. Returns {0, version} stored,
-- {1, 0} duplicate, {2, 0} full.
local function append_mail(mb, meta, session, dedup, dedup_ms, ttl_ms, max, id, text,
                           topic_prefix, push_before, push_after)
  local now = now_ms()
  if dedup ~= '' then
    if not redis.call('SET', dedup, '1', 'NX', 'PX', dedup_ms) then return {1, 0} end
  end
  if redis.call('ZCARD', mb) >= max then
    for _, m in ipairs(redis.call('ZRANGE', mb, 0, -1)) do
      local exp = tonumber(string.match(m, '^(%d+) '))
      if exp and exp <= now then redis.call('ZREM', mb, m) end
    end
  end
  local last = tonumber(redis.call('HGET', meta, 'last') or '0')
  if redis.call('ZCARD', mb) >= max or last >= 9007199254740991 then
    if dedup ~= '' then redis.call('DEL', dedup) end
    return {2, 0}
  end
  last = last + 1
  redis.call('HSET', meta, 'last', last)
  redis.call('PEXPIRE', meta, 604800000)
  redis.call('ZADD', mb, last, (now + ttl_ms) .. ' ' .. id .. ' ' .. text)
  if redis.call('PTTL', mb) < ttl_ms then redis.call('PEXPIRE', mb, ttl_ms) end
  local s = redis.call('GET', session)
  if s then
    local node = string.match(s, '^(%S+) ')
    if node then redis.call('PUBLISH', topic_prefix .. node, push_before .. last .. push_after) end
  end
  return {0, last}
end
