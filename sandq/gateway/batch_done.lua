-- A batch's execution has ended: count it by its status, once, however many gateways saw it end.
-- KEYS[1] the batch's unfinished set; KEYS[2] the batch hash; ARGV[1] execution id; ARGV[2] status field.
-- Returns 1 if this call counted it, 0 if it was counted already.
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  return 1
end
return 0
