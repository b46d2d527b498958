-- Take an in-flight slot with a lease, or park the execution in its tenant's line. Atomic.
-- A tenant above its fair share (the cap split between the active tenants) leaves the last
-- reserved slots to the others. No new execution overtakes a parked one, except that of a
-- tenant below its fair share with nothing parked itself.
-- Uses common.lua: clock, other_active_tenants, below_fair_share, may_take_slot, claim_of.
-- Returns 0 acquired (or already held), 1 parked, 2 refused, 3 a duplicate of a parked or claimed copy.
local in_flight = KEYS[1]
local tenant_in_flight = KEYS[2]        -- inflight:<tenant>
local queued = KEYS[3]
local tenant_queued = KEYS[4]           -- queued:<tenant>
local parked = KEYS[5]
local line = KEYS[6]                    -- parked:<tenant>:<lane>, where this execution would park
local other_line = KEYS[7]              -- parked:<tenant>:<the other lane>
local parked_tenants = KEYS[8]
local entries = KEYS[9]
local handing = KEYS[10]
local handing_tokens = KEYS[11]
local claims = KEYS[12]                 -- execution id -> the token of the one message it lets run
local claim_expiry = KEYS[13]
local active_tenants = KEYS[14]
local id = ARGV[1]
local tenant = ARGV[2]
local lease_seconds = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local tenant_cap = tonumber(ARGV[5])
local token = ARGV[6]                   -- '' for a first delivery, else the token of a hand-off
local entry = ARGV[7]                   -- what to park; '' to refuse instead
local active_seconds = tonumber(ARGV[8])
local reserved = tonumber(ARGV[9])

local now = clock()
if redis.call('SISMEMBER', parked, id) == 1 then
  return 3
end
local claim = claim_of(claims, claim_expiry, id, now)
if claim and claim ~= token then
  return 3
end
if claim and redis.call('ZREM', handing, id) == 1 then
  redis.call('HDEL', handing_tokens, id)
  redis.call('HDEL', entries, id)
end
local expires = now + lease_seconds
local function take()
  redis.call('ZADD', in_flight, expires, id)
  redis.call('ZADD', tenant_in_flight, expires, id)
  redis.call('ZREM', queued, id)
  redis.call('ZREM', tenant_queued, id)
  return 0
end
redis.call('ZREMRANGEBYSCORE', in_flight, '-inf', now)
redis.call('ZREMRANGEBYSCORE', tenant_in_flight, '-inf', now)
if redis.call('ZSCORE', in_flight, id) then
  return take()
end
local running, mine = redis.call('ZCARD', in_flight), redis.call('ZCARD', tenant_in_flight)
local others = other_active_tenants(active_tenants, tenant, now - active_seconds)
local fits = may_take_slot(mine, tenant_cap, cap - running, cap, reserved, others)
local in_line = redis.call('SCARD', parked) > 0 and not (below_fair_share(mine, cap, others)
  and redis.call('LLEN', line) + redis.call('LLEN', other_line) == 0)
if fits and not in_line then
  return take()
end
if entry == '' then
  return 2
end
redis.call('SADD', parked, id)
redis.call('HSET', entries, id, entry)
redis.call('RPUSH', line, id)
redis.call('ZADD', parked_tenants, 'NX', now, tenant)
return 1
