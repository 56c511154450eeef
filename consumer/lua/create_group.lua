#!lua flags=allow-oom
-- Create the consumer group on a shard from id 0, creating the stream if missing; a no-op if it exists.
-- KEYS[1]: the shard stream
-- ARGV: group
--
-- From 0, never $, which would skip what is already there. XGROUP CREATE is refused on a full Redis, and
-- the group is what a consumer needs to drain it.
local reply = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'BUSYGROUP') then return 0 end
  return reply
end
return 1
