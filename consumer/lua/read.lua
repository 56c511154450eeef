#!lua flags=allow-oom
-- Read new or own pending entries of several shards, each only while this consumer holds its lease.
-- KEYS: lease 1, stream 1, lease 2, stream 2, ...   (pairs)
-- ARGV: consumer, group, count, then one start id per shard (">" for new entries, "0" for own history)
-- Returns per shard {stream, 1 if the lease was held else 0, entries}.
--
-- Checking the lease and reading in one atomic step means a consumer frozen past its lease cannot take
-- entries that the shard's new owner is about to read, which would let two consumers write one feed out
-- of order. Redis refuses BLOCK inside scripts, so reads poll. allow-oom: XREADGROUP adds to the pending
-- list, and a full Redis must still be drained.
local out = {}
for i = 1, #KEYS / 2 do
  local lease, stream = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('GET', lease) == ARGV[1] then
    local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[1], 'COUNT', ARGV[3], 'STREAMS', stream,
                         ARGV[3 + i])
    out[i] = {stream, 1, r and r[1][2] or {}}
  else
    out[i] = {stream, 0, {}}
  end
end
return out
