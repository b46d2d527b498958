-- Admit one execution into the queued sets, or say why not. Atomic; nothing is added on refusal.
-- Uses common.lua: clock.
-- Returns 0 admitted, 1 global cap reached, 2 tenant cap reached, 3 already admitted (queued or
-- running), 4 admitted as the tenant's first execution.
local queued = KEYS[1]
local tenant_queued = KEYS[2]           -- queued:<tenant>
local in_flight = KEYS[3]
local tenants = KEYS[4]
local active_tenants = KEYS[5]          -- scored by their last admission
local id = ARGV[1]
local tenant = ARGV[2]
local ttl_seconds = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local tenant_cap = tonumber(ARGV[5])
local active_seconds = tonumber(ARGV[6])

local now = clock()
redis.call('ZREMRANGEBYSCORE', queued, '-inf', now)
redis.call('ZREMRANGEBYSCORE', tenant_queued, '-inf', now)
if redis.call('ZSCORE', queued, id) or redis.call('ZSCORE', in_flight, id) then
  return 3
end
if redis.call('ZCARD', queued) >= cap then
  return 1
end
if redis.call('ZCARD', tenant_queued) >= tenant_cap then
  return 2
end
local expires = now + ttl_seconds
redis.call('ZADD', queued, expires, id)
redis.call('ZADD', tenant_queued, expires, id)
redis.call('ZREMRANGEBYSCORE', active_tenants, '-inf', now - active_seconds)
redis.call('ZADD', active_tenants, now, tenant)
if redis.call('SADD', tenants, tenant) == 1 then
  return 4
end
return 0
