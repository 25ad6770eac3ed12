-- KEYS: stream, meta hash (last, bytes). ARGV: event, max events, max bytes, max age ms
-- (0: no cap). Returns the event's sequence number.
return append_event(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]))
