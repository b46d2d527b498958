-- Hand free in-flight slots to parked executions, fairly, and mark them as being sent. Atomic.
-- Interactive lines go first; among tenants below their cap, the one running the fewest gets the
-- slot, ties going to the tenant served longest ago. A tenant above its fair share (the cap split
-- between the active tenants) does not get the last reserved slots while others are active.
-- Each handed execution leaves its line, takes a slot with a lease, and stays in "handing" until
-- its message is sent (or claimed by a worker); its claim names the token of the one message
-- allowed to run it.
-- Only the tenants whose keys the caller passed are served: a tenant parked since the caller read
-- the parked tenants waits for the next call (the reply says how many were left out).
-- Uses common.lua: clock, other_active_tenants, may_take_slot, hand_out.
-- Returns a flat list: tenants left out (0 if no slot is left for them), then id, token, entry,
-- id, token, entry, ...
local in_flight = KEYS[1]
local parked = KEYS[2]
local parked_tenants = KEYS[3]          -- scored by when each was last served
local queued = KEYS[4]
local active_tenants = KEYS[5]
local record = {entries = KEYS[6], handing = KEYS[7], handing_tokens = KEYS[8], claims = KEYS[9],
                claim_expiry = KEYS[10]}
local first_tenant_key = 11             -- then 4 per tenant: inflight:<tenant>, parked:<tenant>:0
                                        -- (interactive), parked:<tenant>:1 (batch), queued:<tenant>
local lease_seconds = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local most = tonumber(ARGV[3])          -- executions to hand off in this call, at most
local claim_seconds = tonumber(ARGV[4])
local active_seconds = tonumber(ARGV[5])
local reserved = tonumber(ARGV[6])
local first_tenant_arg = 7              -- then 2 per tenant, in the order of its keys: its name
                                        -- and its in-flight cap

local per_tenant = {}  -- tenant -> its keys and cap, then what it runs and how many others are active
for arg = first_tenant_arg, #ARGV, 2 do
  local key = first_tenant_key + 2 * (arg - first_tenant_arg)
  per_tenant[ARGV[arg]] = {cap = tonumber(ARGV[arg + 1]), in_flight = KEYS[key],
                           lines = {KEYS[key + 1], KEYS[key + 2]}, queued = KEYS[key + 3]}
end

local now, stamp = clock()
local expires = now + lease_seconds
redis.call('ZREMRANGEBYSCORE', in_flight, '-inf', now)
local free = cap - redis.call('ZCARD', in_flight)
local handed = {0}
if free <= 0 or redis.call('SCARD', parked) == 0 then
  return handed
end
local tenants, left_out = {}, 0
for _, tenant in ipairs(redis.call('ZRANGE', parked_tenants, 0, -1)) do
  local its = per_tenant[tenant]
  if its then
    redis.call('ZREMRANGEBYSCORE', its.in_flight, '-inf', now)
    its.running = redis.call('ZCARD', its.in_flight)
    its.others = other_active_tenants(active_tenants, tenant, now - active_seconds)
    table.insert(tenants, tenant)
  else
    left_out = left_out + 1
  end
end
local function eligible(tenant)
  local its = per_tenant[tenant]
  return may_take_slot(its.running, its.cap, free, cap, reserved, its.others)
end
local function lines_left(tenant)
  local lines = per_tenant[tenant].lines
  return redis.call('LLEN', lines[1]) + redis.call('LLEN', lines[2])
end

local count = 0
while free > 0 and count < most do
  local best, best_at, line
  for lane = 1, 2 do
    for at, tenant in ipairs(tenants) do
      if (best == nil or per_tenant[tenant].running < per_tenant[best].running) and eligible(tenant)
          and redis.call('LLEN', per_tenant[tenant].lines[lane]) > 0 then
        best, best_at = tenant, at
      end
    end
    if best then
      line = per_tenant[best].lines[lane]
      break
    end
  end
  if not best then
    break
  end
  local its = per_tenant[best]
  local id = redis.call('LPOP', line)
  redis.call('SREM', parked, id)
  redis.call('ZADD', in_flight, expires, id)
  redis.call('ZADD', its.in_flight, expires, id)
  redis.call('ZREM', queued, id)
  redis.call('ZREM', its.queued, id)
  its.running = its.running + 1
  table.remove(tenants, best_at)
  if lines_left(best) == 0 then
    redis.call('ZREM', parked_tenants, best)
  else
    redis.call('ZADD', parked_tenants, now, best)
    table.insert(tenants, best)
  end
  count = count + 1
  hand_out(handed, record, id, stamp .. '-' .. count, now, claim_seconds)
  free = free - 1
end
if free > 0 then
  handed[1] = left_out
end
return handed
