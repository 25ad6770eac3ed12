-- ARGV: 4 sender, 5 force, 6 content, 7 default messages/s, 8 dedup key ('' = none),
-- 9 dedup window ms. Returns 'ok' or an error string.
local from = ARGV[4]
if ARGV[5] ~= '1' and redis.call('HEXISTS', KEYS[3], from) == 0 then return 'not_in_channel' end
local limit = tonumber(redis.call('HGET', KEYS[5], '_sendmsg_limit') or ARGV[7]) or tonumber(ARGV[7])
if limit > 0 and not take_token(KEYS[8] .. ' m', limit) then return 'rate_limited' end
if ARGV[8] ~= '' and not redis.call('SET', ARGV[8], '1', 'NX', 'PX', ARGV[9]) then return 'ok' end
broadcast('-', from, 'channel_msg', ARGV[6])
return 'ok'
