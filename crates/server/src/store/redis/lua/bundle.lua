-- Prepended to every script: what goes to a node's topic. `msgs` (a list, in order) in one
-- message: alone when there is one, else bundled ('b', then each as '<bytes>:<text>'; node.rs's
-- unbundle is its one reader).
local function publish_all(topic, msgs)
  if #msgs == 1 then
    redis.call(PUBLISH, topic, msgs[1])
    return
  end
  local parts = {'b'}
  for _, m in ipairs(msgs) do parts[#parts + 1] = #m .. ':' .. m end
  redis.call(PUBLISH, topic, table.concat(parts))
end
