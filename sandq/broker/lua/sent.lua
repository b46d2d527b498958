-- Forget a hand-off once its message is sent, unless a worker has claimed it since (or it was
-- sent again with another token).
local entries = KEYS[1]
local handing = KEYS[2]
local handing_tokens = KEYS[3]
local id = ARGV[1]
local token = ARGV[2]

if redis.call('HGET', handing_tokens, id) == token then
  redis.call('ZREM', handing, id)
  redis.call('HDEL', handing_tokens, id)
  redis.call('HDEL', entries, id)
end
return 0
