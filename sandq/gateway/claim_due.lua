-- Claim the webhook deliveries that are due: return their ids and push each one's score to the
-- end of a lease, so that no other gateway takes it meanwhile and a dead gateway's come back.
-- KEYS[1] deliveries-due sorted set; ARGV[1] now; ARGV[2] lease end; ARGV[3] most to claim.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return due
