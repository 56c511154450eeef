#!lua flags=allow-oom
-- Record a committed batch in Redis: fingerprints, dead letters, counters, the commit time, then the
-- acknowledgements, all in one atomic step.
-- KEYS[1]: fingerprints hash   KEYS[2]: dead-letter stream   KEYS[3]: counters hash
-- KEYS[4..]: the shard streams whose entries are acknowledged
-- ARGV[1]: group   ARGV[2]: fingerprint fields   ARGV[3]: dead letters   ARGV[4]: counters
-- ARGV[5 ..]: per shard stream, how many of its ids are acknowledged
-- then: fingerprint field/value pairs; each dead letter as its field count and field/value pairs;
--       counter name/increment pairs; the acknowledged ids, shard by shard.
--
-- It runs only after the Postgres commit. Being one step makes a dead letter and its acknowledgement
-- inseparable, so a crash cannot dead-letter an entry twice; a crash before it costs a redelivery, which
-- the writer recognises as already applied. allow-oom: on a full Redis the hash and counter writes would
-- be refused, and with them the acknowledgements that let trimming give the memory back.
local CHUNK = 1000 -- arguments per command: unpack() is bounded by Lua's stack
local group = ARGV[1]
local fingerprints, dead, counters = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local streams = #KEYS - 3
local at = 5 + streams

local function chunked(command, key, extra, first, last)
  for i = first, last, CHUNK do
    local j = math.min(i + CHUNK - 1, last)
    if extra then
      redis.call(command, key, extra, unpack(ARGV, i, j))
    else
      redis.call(command, key, unpack(ARGV, i, j))
    end
  end
end

if fingerprints > 0 then
  chunked('HSET', KEYS[1], nil, at, at + 2 * fingerprints - 1)
  at = at + 2 * fingerprints
end
for _ = 1, dead do
  local fields = tonumber(ARGV[at])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, at + 1, at + 2 * fields))
  at = at + 1 + 2 * fields
end
for _ = 1, counters do
  redis.call('HINCRBY', KEYS[3], ARGV[at], ARGV[at + 1])
  at = at + 2
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], 'last_commit_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for s = 1, streams do
  local ids = tonumber(ARGV[4 + s])
  if ids > 0 then
    chunked('XACK', KEYS[3 + s], group, at, at + ids - 1)
    at = at + ids
  end
end
return 1
