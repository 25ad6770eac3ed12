-- An event in a special channel (presence, firehose), if it has subscribers.
-- ARGV: 4 source, 5 kind, 6 content.
if redis.call('HLEN', KEYS[4]) > 0 then broadcast('-', ARGV[4], ARGV[5], ARGV[6]) end
return 1
