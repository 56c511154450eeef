"""Redis memory as the pipeline sees it: how full Redis is, under which policy, and what that policy risks.

Streams, leases and fingerprints must never be evicted: an evicted stream loses snapshots, an evicted lease
lets two consumers read one shard. Only `noeviction` guarantees that; under it a full Redis refuses writes,
which producers meet with their high-water mark and consumers with scripts allowed to run when full.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.redis_client import Client, on_each_server

SAFE_POLICY = "noeviction"
# Everything the pipeline keeps in Redis has no TTL except the shard leases.
_ALL_KEYS = ("shard streams", "dead letters", "fingerprints", "shard leases", "members", "counters")
_KEYS_WITH_TTL = ("shard leases",)


@dataclass(frozen=True)
class RedisMemory:
    used_bytes: int
    max_bytes: int  # 0: no limit
    policy: str

    @property
    def share(self) -> float | None:
        """How full Redis is, from 0 to 1 (more when consumers' bookkeeping went past it); None: no limit."""
        return self.used_bytes / self.max_bytes if self.max_bytes else None

    def over(self, high_water: float) -> bool:
        share = self.share
        return share is not None and share >= high_water

    @property
    def keys_at_risk(self) -> tuple[str, ...]:
        """What the eviction policy could delete when Redis is full."""
        if self.policy.startswith("allkeys-"):
            return _ALL_KEYS
        if self.policy.startswith("volatile-"):
            return _KEYS_WITH_TTL
        return ()


def eviction_risk(memory: RedisMemory) -> str | None:
    """A sentence for operators when the policy could evict what the pipeline needs; None when safe."""
    if not memory.keys_at_risk:
        return None
    return (
        f"maxmemory-policy {memory.policy} can evict the {', '.join(memory.keys_at_risk)}; "
        f"set it to {SAFE_POLICY}"
    )


def memory_from_info(info: Mapping[str, Any]) -> RedisMemory:
    """From the reply of INFO memory (which redis-py parses into a dict)."""
    return RedisMemory(int(info["used_memory"]), int(info["maxmemory"]), str(info["maxmemory_policy"]))


def read_memory(client: Client) -> RedisMemory:
    """The memory of the server that holds keys, or of the cluster master closest to full: a backlog
    grows on the masters of its shards, and the first one full refuses the producers' entries."""
    return fullest(on_each_server(client, lambda server: memory_from_info(server.info("memory"))))


def fullest(readings: list[RedisMemory]) -> RedisMemory:
    """Of the readings of a cluster's masters, the one closest to full (the only one, on one server)."""
    return max(readings, key=lambda m: (m.share or 0.0, m.used_bytes))


class Growth:
    """The rate at which Redis memory grows, smoothed over about `horizon_s`, from samples of used memory.

    Producers publish in bursts (a cycle at a time) and consumers trim every few seconds, so two samples
    alone would say "full in a minute" one moment and "shrinking" the next.
    """

    def __init__(self, horizon_s: float = 60.0) -> None:
        self._horizon_s = horizon_s
        self._last: tuple[float, int] | None = None
        self.bytes_per_s = 0.0

    def sample(self, used_bytes: int, now_s: float) -> None:
        if self._last is not None and now_s > self._last[0]:
            elapsed = now_s - self._last[0]
            rate = (used_bytes - self._last[1]) / elapsed
            weight = min(1.0, elapsed / self._horizon_s)
            self.bytes_per_s += weight * (rate - self.bytes_per_s)
        self._last = (now_s, used_bytes)

    def seconds_until(self, memory: RedisMemory) -> float:
        """Until used memory reaches maxmemory at the current rate; infinite when not growing or unlimited."""
        if not memory.max_bytes or self.bytes_per_s <= 0:
            return math.inf
        return max(0.0, (memory.max_bytes - memory.used_bytes) / self.bytes_per_s)
