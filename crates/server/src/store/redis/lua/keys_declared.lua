-- Debug builds only (store::redis::script): every `redis.call` of the script goes through
-- here, and a key it names that is not one of the script's KEYS is an error. Commands whose
-- first argument is no key (TIME, the pub/sub topics) pass; DEL, EXISTS, UNLINK and MGET name
-- keys only.
local KEY_DECLARED = {}
for _, k in ipairs(KEYS) do KEY_DECLARED[k] = true end
local function keys_declared_call(cmd, ...)
  local c = string.upper(cmd)
  if c ~= 'TIME' and c ~= 'PUBLISH' and c ~= 'SPUBLISH' then
    local n = 1
    if c == 'DEL' or c == 'EXISTS' or c == 'UNLINK' or c == 'MGET' then n = select('#', ...) end
    for i = 1, n do
      local k = select(i, ...)
      if not KEY_DECLARED[k] then
        error('a key not in KEYS: ' .. tostring(k) .. ' (' .. c .. ')')
      end
    end
  end
  return redis.call(cmd, ...)
end
