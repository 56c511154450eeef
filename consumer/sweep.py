"""Fingerprints of feeds gone quiet leave Redis, so the hashes do not keep every feed ever seen.

A scraper covering a few thousand new events a day adds millions of feeds a year. Redis 7.0 has no TTL per
hash field, so each shard's hash is walked in turn, a few pages at a time, and each fingerprint whose last
sighting is older than the expiry is deleted (consumer/lua/expire_fingerprints.lua). A feed seen again later
costs one Postgres look-up: the fingerprint is a cache, Postgres the authority.
"""

from __future__ import annotations

from consumer.scripts import load
from shared.keys import Keys
from shared.redis_client import Client

PAGE = 1000
PAGES_PER_STEP = 10  # a million fingerprints are walked in 100 steps, one each trim interval


class FingerprintSweep:
    def __init__(self, client: Client, keys: Keys, expiry_s: int) -> None:
        self._keys = keys
        self._expiry_ms = expiry_s * 1000
        self._expire = load(client, "expire_fingerprints")
        self._shard = 0
        self._cursor = b"0"
        self.passes = 0  # complete walks of every shard's hash

    def step(self) -> int:
        """Walk the next pages of the hashes; returns how many fingerprints expired."""
        deleted = 0
        for _ in range(PAGES_PER_STEP):
            cursor, expired = self._expire(
                keys=[self._keys.fingerprints(self._shard)], args=[self._cursor, PAGE, self._expiry_ms]
            )
            self._cursor, deleted = cursor, deleted + int(expired)
            if cursor in (b"0", "0"):
                self._shard = (self._shard + 1) % self._keys.shards
                if self._shard == 0:
                    self.passes += 1
                    break  # one pass complete; the next step starts the next pass
        return deleted
