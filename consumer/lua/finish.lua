#!lua flags=allow-oom
-- Record a committed batch in Redis: fingerprints, dead letters, acknowledgements, counters and the commit
-- time, all in one atomic step.
-- KEYS[1]: fingerprints hash   KEYS[2]: dead-letter stream   KEYS[3]: counters hash
-- KEYS[4..]: the shard streams whose entries are acknowledged
-- ARGV[1]: group   ARGV[2]: fingerprint fields   ARGV[3]: dead letters   ARGV[4]: counters
-- ARGV[5 ..]: per shard stream, how many of its ids are acknowledged
-- then: fingerprint field/value pairs; each dead letter as the KEYS index of its shard stream, its entry
--       id, its field count and field/value pairs; counter name/increment pairs; the acknowledged ids,
--       shard by shard.
-- Returns how many entries this call acknowledged.
--
-- It runs only after the Postgres commit. Being one step makes a dead letter and its acknowledgement
-- inseparable, so a crash cannot dead-letter an entry twice; a crash before it costs a redelivery, which
-- the writer recognises as already applied. A dead letter is added only by the call that acknowledges
-- its entry, and the counters only by a call that acknowledges something: when the reply of an earlier
-- call was lost and the batch's bookkeeping is sent again, nothing is counted or dead-lettered twice.
-- allow-oom: on a full Redis the hash and counter writes would be refused, and with them the
-- acknowledgements that let trimming give the memory back.
local CHUNK = 1000 -- arguments per command: unpack() is bounded by Lua's stack
local group = ARGV[1]
local fingerprints, dead, counters = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local streams = #KEYS - 3
local at = 5 + streams
local acked = 0

if fingerprints > 0 then
  for i = at, at + 2 * fingerprints - 1, CHUNK do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + CHUNK - 1, at + 2 * fingerprints - 1)))
  end
  at = at + 2 * fingerprints
end
for _ = 1, dead do
  local stream, id, fields = KEYS[tonumber(ARGV[at])], ARGV[at + 1], tonumber(ARGV[at + 2])
  if redis.call('XACK', stream, group, id) == 1 then
    acked = acked + 1
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, at + 3, at + 2 + 2 * fields))
  end
  at = at + 3 + 2 * fields
end
local first_counter = at
at = at + 2 * counters
for s = 1, streams do
  local ids = tonumber(ARGV[4 + s])
  for i = at, at + ids - 1, CHUNK do
    acked = acked + redis.call('XACK', KEYS[3 + s], group, unpack(ARGV, i, math.min(i + CHUNK - 1, at + ids - 1)))
  end
  at = at + ids
end
if acked > 0 then
  for i = first_counter, first_counter + 2 * counters - 1, 2 do
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], 'last_commit_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return acked
