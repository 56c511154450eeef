#!lua flags=allow-oom
-- Delete, in one page of the fingerprints hash, the fingerprints of feeds not seen for a while.
-- KEYS[1]: fingerprints hash
-- ARGV: cursor, page size, expiry ms
-- Returns {next cursor ("0" when the pass is complete), fingerprints deleted}.
--
-- Each value ends with the capture time of the feed's last sighting, 8 bytes big-endian in ms. Checked and
-- deleted in one step, so a fingerprint rewritten meanwhile is not deleted. Server time: a consumer's
-- clock has no say in what expires.
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
local reply = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields, expired = reply[2], {}
for i = 1, #fields, 2 do
  local value = fields[i + 1]
  if #value >= 8 then
    local ts = 0
    for b = #value - 7, #value do
      ts = ts * 256 + string.byte(value, b)
    end
    if ts < cutoff then
      expired[#expired + 1] = fields[i]
    end
  end
end
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
end
return {reply[1], #expired}
