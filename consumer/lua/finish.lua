#!lua flags=allow-oom
-- Record what a committed batch did on one shard: fingerprints, dead letters, acknowledgements, counters and
-- the commit time, all in one atomic step.
-- KEYS[1]: the shard's fingerprints hash   KEYS[2]: its dead-letter stream   KEYS[3]: its counters hash
-- KEYS[4]: the shard stream
-- ARGV[1]: group   ARGV[2]: fingerprint fields   ARGV[3]: dead letters   ARGV[4]: counters   ARGV[5]: ids
-- then: fingerprint field/value pairs; each dead letter as its entry id, its field count and field/value
--       pairs; counter name/increment pairs; the acknowledged ids.
-- Returns how many entries this call acknowledged.
--
-- It runs only after the Postgres commit. Being one step makes a dead letter and its acknowledgement
-- inseparable, so a crash cannot dead-letter an entry twice; a crash before it costs a redelivery, which
-- the writer recognises as already applied. A dead letter is added only by the call that acknowledges
-- its entry, and the counters only by a call that acknowledges something: when the reply of an earlier
-- call was lost and the bookkeeping is sent again, nothing is counted or dead-lettered twice.
-- Every key is the shard's (one hash tag), so on a Redis Cluster the step runs in the shard's slot.
-- allow-oom: on a full Redis the hash and counter writes would be refused, and with them the
-- acknowledgements that let trimming give the memory back.
local CHUNK = 1000 -- arguments per command: unpack() is bounded by Lua's stack
local group, stream = ARGV[1], KEYS[4]
local fingerprints, dead, counters, ids = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local at = 6
local acked = 0

if fingerprints > 0 then
  for i = at, at + 2 * fingerprints - 1, CHUNK do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + CHUNK - 1, at + 2 * fingerprints - 1)))
  end
  at = at + 2 * fingerprints
end
for _ = 1, dead do
  local id, fields = ARGV[at], tonumber(ARGV[at + 1])
  if redis.call('XACK', stream, group, id) == 1 then
    acked = acked + 1
    redis.call('XADD', KEYS[2], '*', unpack(ARGV, at + 2, at + 1 + 2 * fields))
  end
  at = at + 2 + 2 * fields
end
local first_counter = at
at = at + 2 * counters
for i = at, at + ids - 1, CHUNK do
  acked = acked + redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + CHUNK - 1, at + ids - 1)))
end
if acked > 0 then
  for i = first_counter, first_counter + 2 * counters - 1, 2 do
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[3], 'last_commit_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return acked
