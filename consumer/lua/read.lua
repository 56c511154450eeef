#!lua flags=allow-oom
-- Read new or own pending entries of several shards, each only while this consumer holds its lease.
-- KEYS: lease 1, stream 1, lease 2, stream 2, ...   (pairs)
-- ARGV: consumer, group, count, byte budget per shard, largest entry allowed, then one start id per shard
--       (">" for new entries, "0" for own history)
-- Returns per shard {stream, 1 if the lease was held else 0, entries}.
--
-- Checking the lease and reading in one atomic step means a consumer frozen past its lease cannot take
-- entries that the shard's new owner is about to read, which would let two consumers write one feed out
-- of order. Redis refuses BLOCK inside scripts, so reads poll. allow-oom: XREADGROUP adds to the pending
-- list, and a full Redis must still be drained.
--
-- Each shard's read stops short of its byte budget: it takes pages no larger than the budget left could
-- hold if every entry were as large as allowed, so one call carries little more than the budget however
-- large the entries are, and never blocks Redis (and every client's timeout) for long.
local me, group, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local budget, largest = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
for i = 1, #KEYS / 2 do
  local lease, stream = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('GET', lease) == me then
    local entries, used, from = {}, 0, ARGV[5 + i]
    while #entries < count do
      local page = math.min(count - #entries, math.floor((budget - used) / largest))
      if page < 1 then
        if #entries > 0 then break end
        page = 1  -- a budget below the entry limit still reads, one entry at a time
      end
      local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', page, 'STREAMS', stream, from)
      local got = r and r[1][2] or {}
      for _, e in ipairs(got) do
        entries[#entries + 1] = e
        if e[2] then
          for j = 1, #e[2] do used = used + #e[2][j] end
        end
      end
      if #got < page then break end
      -- Our own history is read from an id, so the next page starts after the last entry; '>' moves on.
      if from ~= '>' then from = got[#got][1] end
    end
    out[i] = {stream, 1, entries}
  else
    out[i] = {stream, 0, {}}
  end
end
return out
