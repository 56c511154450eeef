#!lua flags=allow-oom
-- Take a shard lease if it is free or already ours.
-- KEYS[1]: the lease
-- ARGV: consumer, ttl ms
-- Returns 1 if held now, 0 if another consumer holds it.
--
-- Already ours: a consumer restarted under the same name resumes its shards at once instead of waiting for
-- its own old lease to expire.
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
