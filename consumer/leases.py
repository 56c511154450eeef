"""Shard leases: each stream shard has at most one active reader, so each feed is written in order.

With several consumers reading one stream, two entries of one feed can be committed out of order. Instead,
each shard is leased to one consumer (a Redis key holding its name, with a TTL it keeps renewing), and the
shards are spread evenly over the live consumers. The lease is checked atomically with every read (see
stream.py), so a consumer that lost its lease can no longer take new entries.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Collection

import redis
import structlog

from consumer.scripts import load
from shared.keys import Keys

log = structlog.get_logger(__name__)


class Leases:
    def __init__(self, client: redis.Redis, keys: Keys, name: str, ttl_ms: int) -> None:
        self._client = client
        self._keys = keys
        self._name = name
        self._ttl_ms = ttl_ms
        self._acquire = load(client, "acquire")
        self._renew = load(client, "renew")
        self._release = load(client, "release")
        self._heartbeat_script = load(client, "heartbeat")
        self.owned: set[int] = set()
        self._next_maintenance = 0.0

    def maintain(self, force: bool = False, keep: Collection[int] = ()) -> tuple[set[int], set[int]]:
        """Heartbeat, renew, and rebalance towards a fair share; returns (gained, lost) shards.

        Runs at most every fifth of the TTL, so a renewal is never close to the expiry. Shards in keep are
        not given up for fairness: they hold a batch that is being retried, and handing it over would make
        the next owner apply it again.
        """
        now = time.monotonic()
        if not force and now < self._next_maintenance:
            return set(), set()
        self._next_maintenance = now + self._ttl_ms / 5000
        live = self._heartbeat()
        lost = {
            n
            for n in self.owned
            if not self._renew(keys=[self._keys.lease(n)], args=[self._name, self._ttl_ms])
        }
        self.owned -= lost
        fair = math.ceil(self._keys.shards / max(live, 1))
        surplus = [n for n in sorted(self.owned, reverse=True) if n not in keep]
        for n in surplus[: max(0, len(self.owned) - fair)]:
            self.release(n)
        gained: set[int] = set()
        free = [n for n in range(self._keys.shards) if n not in self.owned]
        random.shuffle(free)  # consumers starting together should not all race for shard 0
        for n in free:
            if len(self.owned) >= fair:
                break
            if self._acquire(keys=[self._keys.lease(n)], args=[self._name, self._ttl_ms]):
                self.owned.add(n)
                gained.add(n)
        if gained or lost:
            log.info(
                "shard_leases_changed",
                owned=sorted(self.owned),
                gained=sorted(gained),
                lost=sorted(lost),
                live_consumers=live,
            )
        return gained, lost

    def release(self, n: int) -> None:
        self._release(keys=[self._keys.lease(n)], args=[self._name])
        self.owned.discard(n)

    def release_all(self) -> None:
        for n in list(self.owned):
            self.release(n)
        self._client.zrem(self._keys.members, self._name)  # ZREM frees memory: allowed on a full Redis

    def _heartbeat(self) -> int:
        return int(self._heartbeat_script(keys=[self._keys.members], args=[self._name, self._ttl_ms]))
