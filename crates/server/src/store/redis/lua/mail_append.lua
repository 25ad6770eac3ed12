-- KEYS: 1 mailbox, 2 meta, 3 recipient's session, 4 dedup key ('' = none).
-- ARGV: 1 dedup window ms, 2 ttl ms, 3 max messages, 4 id, 5 text, 6 topic prefix,
-- 7 push before, 8 push after.
return append_mail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], tonumber(ARGV[2]),
  tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
