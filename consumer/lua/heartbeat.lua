#!lua flags=allow-oom
-- Mark this consumer alive, forget members silent for a lease TTL, and list the live ones. The set
-- expires a lease TTL after the last heartbeat, when every member in it is silent: consumers killed
-- without leaving do not leave it behind for ever.
-- KEYS[1]: the members sorted set
-- ARGV: consumer, ttl ms
-- Returns the names of the live members (each consumer ranks them to find its share of the shards).
--
-- Scored with the Redis server's clock, never a consumer's: a consumer whose clock ran ahead would
-- otherwise drop every other member at each heartbeat and take all shards.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZRANGE', KEYS[1], 0, -1)
