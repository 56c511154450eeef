#!lua flags=allow-oom
-- Extend a shard lease that this consumer holds.
-- KEYS[1]: the lease
-- ARGV: consumer, ttl ms
-- Returns 1 if renewed, 0 if the lease is gone or another's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
