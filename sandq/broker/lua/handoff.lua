-- Hand free in-flight slots to parked executions, fairly, and mark them as being sent. Atomic.
-- Interactive lines go first; among tenants below their cap, the one running the fewest gets the
-- slot, ties going to the tenant served longest ago. A tenant above its fair share (the cap split
-- between the active tenants) does not get the last reserved slots while others are active. Each handed execution leaves its line, takes
-- a slot with a lease, and stays in "handing" until its message is sent (or claimed by a worker);
-- its claim names the token of the one message allowed to run it.
-- KEYS: 1 inflight, 2 parked, 3 parked tenants, 4 entries, 5 handing, 6 handing tokens, 7 queued,
--       8 active tenants
-- ARGV: 1 lease seconds, 2 global cap, 3 default tenant cap, 4 JSON {tenant: cap} of overrides,
--       5 inflight:<tenant> prefix, 6 parked:<tenant>:<lane> prefix, 7 queued:<tenant> prefix,
--       8 most executions to hand off in this call, 9 claim:<id> prefix, 10 seconds a claim is kept,
--       11 seconds a tenant counts as active, 12 reserved slots
-- Returns a flat list: id, token, entry, id, token, entry, ...
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expires = now + tonumber(ARGV[1])
local caps = cjson.decode(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local handed = {}
if free <= 0 or redis.call('SCARD', KEYS[2]) == 0 then
  return handed
end
local tenants = redis.call('ZRANGE', KEYS[3], 0, -1)
local running = {}
for _, tenant in ipairs(tenants) do
  redis.call('ZREMRANGEBYSCORE', ARGV[5] .. tenant, '-inf', now)
  running[tenant] = redis.call('ZCARD', ARGV[5] .. tenant)
end
local cap, reserved = tonumber(ARGV[2]), tonumber(ARGV[12])
local since = now - tonumber(ARGV[11])
local active = redis.call('ZCOUNT', KEYS[8], since, '+inf')
local function eligible(tenant)
  local mine = running[tenant]
  if mine >= tonumber(caps[tenant] or ARGV[3]) then
    return false
  end
  local others = active
  local seen = redis.call('ZSCORE', KEYS[8], tenant)
  if seen and tonumber(seen) >= since then
    others = others - 1
  end
  return others == 0 or mine < math.floor(cap / (others + 1)) or free > reserved
end
local count = 0
while free > 0 and count < tonumber(ARGV[8]) do
  local best, best_at, line
  for _, lane in ipairs({'0', '1'}) do
    for at, tenant in ipairs(tenants) do
      if (best == nil or running[tenant] < running[best]) and eligible(tenant)
          and redis.call('LLEN', ARGV[6] .. tenant .. ':' .. lane) > 0 then
        best, best_at = tenant, at
      end
    end
    if best then
      line = ARGV[6] .. best .. ':' .. lane
      break
    end
  end
  if not best then
    break
  end
  local id = redis.call('LPOP', line)
  redis.call('SREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], expires, id)
  redis.call('ZADD', ARGV[5] .. best, expires, id)
  redis.call('ZREM', KEYS[7], id)
  redis.call('ZREM', ARGV[7] .. best, id)
  running[best] = running[best] + 1
  table.remove(tenants, best_at)
  if redis.call('LLEN', ARGV[6] .. best .. ':0') + redis.call('LLEN', ARGV[6] .. best .. ':1') == 0 then
    redis.call('ZREM', KEYS[3], best)
  else
    redis.call('ZADD', KEYS[3], now, best)
    table.insert(tenants, best)
  end
  count = count + 1
  local token = t[1] .. t[2] .. '-' .. count
  redis.call('ZADD', KEYS[5], now, id)
  redis.call('HSET', KEYS[6], id, token)
  redis.call('SET', ARGV[9] .. id, token, 'EX', ARGV[10])
  table.insert(handed, id)
  table.insert(handed, token)
  table.insert(handed, redis.call('HGET', KEYS[4], id))
  free = free - 1
end
return handed
