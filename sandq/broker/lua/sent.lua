-- Forget a hand-off once its message is sent, unless a worker has claimed it since (or it was
-- sent again with another token). KEYS: 1 entries, 2 handing, 3 handing tokens; ARGV: 1 id, 2 token
if redis.call('HGET', KEYS[3], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
