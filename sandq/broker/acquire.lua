-- Take an in-flight slot with a lease, or say why not. Atomic; expired leases are dropped first.
-- KEYS: 1 inflight, 2 inflight:<tenant>, 3 queued, 4 queued:<tenant>, 5 waiting, 6 interactive waiting
-- ARGV: 1 id, 2 tenant, 3 lease seconds, 4 global cap, 5 tenant cap, 6 inflight key prefix,
--       7 '1' if interactive, 8 seconds a refused tenant counts as waiting
-- Returns 0 acquired (or already held), 1 global cap, 2 tenant cap, 3 fair share of another
-- waiting tenant, 4 interactive work waiting.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local id, tenant = ARGV[1], ARGV[2]
local expires = now + tonumber(ARGV[3])
local window = tonumber(ARGV[8])
local interactive = ARGV[7] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], id) then
  redis.call('ZADD', KEYS[1], expires, id)
  redis.call('ZADD', KEYS[2], expires, id)
  return 0
end
local mine = redis.call('ZCARD', KEYS[2])
if mine >= tonumber(ARGV[5]) then
  return 2
end
local function wait(code)
  redis.call('ZADD', KEYS[5], now, tenant)
  if interactive then
    redis.call('SET', KEYS[6], '1', 'PX', math.ceil(window * 1000))
  end
  return code
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return wait(1)
end
if not interactive and redis.call('EXISTS', KEYS[6]) == 1 then
  return wait(4)
end
for _, other in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  if other ~= tenant and redis.call('ZCOUNT', ARGV[6] .. other, now, '+inf') < mine then
    return wait(3)
  end
end
redis.call('ZADD', KEYS[1], expires, id)
redis.call('ZADD', KEYS[2], expires, id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], tenant)
return 0
