#!lua flags=allow-oom
-- Read new or own pending entries of several shards, each only while this consumer holds its lease.
-- KEYS: lease 1, stream 1, lease 2, stream 2, ...   (pairs)
-- ARGV: consumer, group, count per shard, byte budget left of the whole read, largest entry allowed, how
--       many entries the read took already, then one start id per shard (">" for new entries, "0" for own
--       history)
-- Returns per shard {stream, 1 if the lease was held else 0, entries, 1 if the budget left it unread}.
--
-- Checking the lease and reading in one atomic step means a consumer frozen past its lease cannot take
-- entries that the shard's new owner is about to read, which would let two consumers write one feed out
-- of order. Redis refuses BLOCK inside scripts, so reads poll. allow-oom: XREADGROUP adds to the pending
-- list, and a full Redis must still be drained.
--
-- The read stops short of its byte budget: it takes pages no larger than the budget left could hold if
-- every entry were as large as allowed, so one call carries little more than the budget however large
-- the entries are, and never blocks Redis (and every client's timeout) for long. The budget is the whole
-- read's, not a share per shard: a share smaller than the largest entry would read one entry per shard.
-- A shard the budget leaves unread says so, so that an empty answer is not taken for a drained history;
-- the caller starts each read at another shard, so none waits behind the others. On a Redis Cluster a
-- call holds only shards of one slot, and the caller carries the budget from call to call.
local me, group, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local budget, largest = tonumber(ARGV[4]), tonumber(ARGV[5])
local out, used, taken = {}, 0, tonumber(ARGV[6])
for i = 1, #KEYS / 2 do
  local lease, stream = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('GET', lease) ~= me then
    out[i] = {stream, 0, {}, 0}
  elseif taken > 0 and budget - used < largest then
    out[i] = {stream, 1, {}, 1}
  else
    local entries, from = {}, ARGV[6 + i]
    while #entries < count do
      local page = math.min(count - #entries, math.floor((budget - used) / largest))
      if page < 1 then
        if taken > 0 then break end
        page = 1  -- a budget below the entry limit still reads, one entry at a time
      end
      local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', page, 'STREAMS', stream, from)
      local got = r and r[1][2] or {}
      for _, e in ipairs(got) do
        entries[#entries + 1] = e
        taken = taken + 1
        if e[2] then
          for j = 1, #e[2] do used = used + #e[2][j] end
        end
      end
      if #got < page then break end
      -- Our own history is read from an id, so the next page starts after the last entry; '>' moves on.
      if from ~= '>' then from = got[#got][1] end
    end
    out[i] = {stream, 1, entries, 0}
  end
end
return out
