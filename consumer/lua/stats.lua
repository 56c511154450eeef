#!lua flags=allow-oom
-- Add to counters and set values in the counters hash, even on a full Redis.
-- KEYS[1]: counters hash
-- ARGV[1]: how many counter name/increment pairs follow; then those pairs; then field/value pairs to set
--
-- These are the loss counters (entries deleted by trimming) and the memory growth estimate: losing them to
-- a full Redis would hide exactly what an operator needs to see then.
local increments = tonumber(ARGV[1])
for i = 2, 2 * increments, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
for i = 2 + 2 * increments, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
