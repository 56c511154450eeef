"""Each consumer samples Redis memory every few seconds: for its metrics, and for status's time until full.

The growth estimate goes into the counters hash (with the Redis time of the sample), so that `status`, a
one-shot command, can say how long Redis has left at the current rate without sampling over a minute itself.
"""

from __future__ import annotations

import time

import structlog

from consumer.stream import ShardStreams
from shared.memory import Growth, RedisMemory, eviction_risk, read_memory
from shared.redis_client import Client

log = structlog.get_logger(__name__)

SAMPLE_INTERVAL_S = 5.0
GROWTH_FIELD = "memory_growth_bytes_per_s"
SAMPLED_FIELD = "memory_sampled_ms"


class MemoryWatch:
    def __init__(self, client: Client, streams: ShardStreams) -> None:
        self._client = client
        self._streams = streams
        self.growth = Growth()
        self.last: RedisMemory | None = None
        self._next_sample = 0.0

    def sample(self) -> None:
        """Read memory if a sample is due, update the growth estimate and record it in Redis."""
        now = time.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_INTERVAL_S
        self.last = read_memory(self._client)
        seconds, micros = self._client.time()
        server_ms = int(seconds) * 1000 + int(micros) // 1000
        self.growth.sample(self.last.used_bytes, server_ms / 1000)
        self._streams.record_stats(
            {}, {GROWTH_FIELD: round(self.growth.bytes_per_s), SAMPLED_FIELD: server_ms}
        )


def log_memory_policy(memory: RedisMemory | None) -> None:
    """Say at start whether Redis could evict what the pipeline needs, and how full it is."""
    if memory is None:
        log.warning("redis_memory_unknown")
        return
    risk = eviction_risk(memory)
    (log.error if risk else log.info)(
        "redis_memory_checked",
        used_bytes=memory.used_bytes,
        max_bytes=memory.max_bytes,
        policy=memory.policy,
        **({"risk": risk} if risk else {}),
    )
