-- Admit one execution into the queued sets, or say why not. Atomic; nothing is added on refusal.
-- KEYS: 1 queued, 2 queued:<tenant>, 3 inflight, 4 tenants, 5 active tenants (scored by last admission)
-- ARGV: 1 id, 2 tenant, 3 ttl seconds, 4 global cap, 5 tenant cap, 6 seconds a tenant counts as active
-- Returns 0 admitted, 1 global cap reached, 2 tenant cap reached, 3 already admitted,
-- 4 admitted as the tenant's first execution.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id = ARGV[1]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], id) or redis.call('ZSCORE', KEYS[3], id) then
  return 3
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 1
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return 2
end
local expires = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], expires, id)
redis.call('ZADD', KEYS[2], expires, id)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[6]))
redis.call('ZADD', KEYS[5], now, ARGV[2])
if redis.call('SADD', KEYS[4], ARGV[2]) == 1 then
  return 4
end
return 0
