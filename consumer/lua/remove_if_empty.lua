#!lua flags=allow-oom
-- Remove a consumer from a shard's group, only while it holds no pending entry there.
-- KEYS[1]: the shard stream
-- ARGV: group, consumer
-- Returns 1 if removed, 0 if it still holds entries.
--
-- Deleting a consumer that holds entries would drop them from the group's pending list, and nobody would
-- ever reclaim them. One atomic step, so it cannot gain an entry between the check and the delete.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
