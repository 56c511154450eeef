#!lua flags=allow-oom
-- Give a shard lease back, if it is still ours.
-- KEYS[1]: the lease
-- ARGV: consumer
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
