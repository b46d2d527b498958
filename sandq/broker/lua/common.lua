-- Helpers shared by the scripts; sandq/broker/scripts.py prepends this file to the scripts that
-- use them. Every key a helper touches is passed in by its script (declared in the script's KEYS).

-- The server's clock: seconds (with microseconds), and the same instant as digits (for tokens).
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000, t[1] .. t[2]
end

-- The fair-share rule. A tenant's fair share is the global cap split between the active tenants
-- (those admitted since `since`, a score of `active_tenants`); `others` is how many of them are
-- not `tenant`.
local function other_active_tenants(active_tenants, tenant, since)
  local others = redis.call('ZCOUNT', active_tenants, since, '+inf')
  local seen = redis.call('ZSCORE', active_tenants, tenant)
  if seen and tonumber(seen) >= since then
    others = others - 1
  end
  return others
end

local function below_fair_share(mine, cap, others)
  return mine < math.floor(cap / (others + 1))
end

-- May a tenant running `mine` take one of the `free` slots? Only below its own cap; and then if
-- it is the only active tenant, or below its fair share, or if more than the `reserved` slots
-- would still be free for the others.
local function may_take_slot(mine, tenant_cap, free, cap, reserved, others)
  if free <= 0 or mine >= tenant_cap then
    return false
  end
  return others == 0 or below_fair_share(mine, cap, others) or free > reserved
end

-- Hand out execution `id` in the message marked `token`, and append id, token and entry to
-- `handed`. It stays in `keys.handing` until that message is sent (or a worker claims it); its
-- claim, kept `claim_seconds`, lets only the message with that token run it.
-- keys: entries, handing, handing_tokens, claims, claim_expiry.
local function hand_out(handed, keys, id, token, now, claim_seconds)
  redis.call('ZADD', keys.handing, now, id)
  redis.call('HSET', keys.handing_tokens, id, token)
  redis.call('HSET', keys.claims, id, token)
  redis.call('ZADD', keys.claim_expiry, now + claim_seconds, id)
  table.insert(handed, id)
  table.insert(handed, token)
  table.insert(handed, redis.call('HGET', keys.entries, id))
end

-- The token of the claim on `id`, or nil if there is none (or it has expired).
local function claim_of(claims, claim_expiry, id, now)
  local expires = redis.call('ZSCORE', claim_expiry, id)
  if expires and tonumber(expires) > now then
    return redis.call('HGET', claims, id)
  end
  return nil
end

-- Forget up to `most` claims that expired before `now`.
local function forget_expired_claims(claims, claim_expiry, now, most)
  local expired = redis.call('ZRANGEBYSCORE', claim_expiry, '-inf', now, 'LIMIT', 0, most)
  for _, id in ipairs(expired) do
    redis.call('HDEL', claims, id)
    redis.call('ZREM', claim_expiry, id)
  end
end
