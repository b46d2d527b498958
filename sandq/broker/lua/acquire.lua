-- Take an in-flight slot with a lease, or park the execution in its tenant's line. Atomic.
-- A tenant above its fair share (the cap split between the active tenants) leaves the last
-- reserved slots to the others. No new execution overtakes a parked one, except that of a
-- tenant below its fair share with nothing parked itself.
-- KEYS: 1 inflight, 2 inflight:<tenant>, 3 queued, 4 queued:<tenant>, 5 parked,
--       6 parked:<tenant>:<lane>, 7 parked:<tenant>:<other lane>, 8 parked tenants, 9 entries,
--       10 handing, 11 handing tokens, 12 claim:<id> (the token of the one message a hand-off
--       lets run), 13 active tenants
-- ARGV: 1 id, 2 tenant, 3 lease seconds, 4 global cap, 5 tenant cap, 6 token of this message
--       ('' for a first delivery), 7 entry to park ('' to refuse instead), 8 seconds a tenant
--       counts as active, 9 reserved slots
-- Returns 0 acquired (or already held), 1 parked, 2 refused, 3 a duplicate of a parked or claimed copy.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, tenant, token = ARGV[1], ARGV[2], ARGV[6]
if redis.call('SISMEMBER', KEYS[5], id) == 1 then
  return 3
end
local claim = redis.call('GET', KEYS[12])
if claim and claim ~= token then
  return 3
end
if claim and redis.call('ZREM', KEYS[10], id) == 1 then
  redis.call('HDEL', KEYS[11], id)
  redis.call('HDEL', KEYS[9], id)
end
local expires = now + tonumber(ARGV[3])
local function take()
  redis.call('ZADD', KEYS[1], expires, id)
  redis.call('ZADD', KEYS[2], expires, id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[1], id) then
  return take()
end
local cap, running, mine = tonumber(ARGV[4]), redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])
local since = now - tonumber(ARGV[8])
local others = redis.call('ZCOUNT', KEYS[13], since, '+inf')
local seen = redis.call('ZSCORE', KEYS[13], tenant)
if seen and tonumber(seen) >= since then
  others = others - 1
end
local below_share = mine < math.floor(cap / (others + 1))
local fits = mine < tonumber(ARGV[5]) and running < cap
  and (others == 0 or below_share or cap - running > tonumber(ARGV[9]))
local in_line = redis.call('SCARD', KEYS[5]) > 0 and not (below_share
  and redis.call('LLEN', KEYS[6]) + redis.call('LLEN', KEYS[7]) == 0)
if fits and not in_line then
  return take()
end
if ARGV[7] == '' then
  return 2
end
redis.call('SADD', KEYS[5], id)
redis.call('HSET', KEYS[9], id, ARGV[7])
redis.call('RPUSH', KEYS[6], id)
redis.call('ZADD', KEYS[8], 'NX', now, tenant)
return 1
