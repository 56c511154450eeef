"""Prometheus metrics of one consumer process, served over HTTP when a metrics port is set.

Each instance has its own registry, so several daemons in one process (tests, the demo) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

import psycopg
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from consumer.memory_watch import MemoryWatch
from shared.backlog import group_backlog
from shared.keys import Keys
from shared.redis_client import Client

OUTCOMES = ("changed", "unchanged", "stale", "duplicate", "dead_lettered", "lost_trimmed")
RETRY_LABELS = tuple(
    (cause, backend) for cause in ("transient", "unavailable") for backend in ("redis", "postgres")
)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ConsumerMetrics:
    def __init__(self, client: Client, keys: Keys, memory: MemoryWatch, refresh_s: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        self._client = client
        self._keys = keys
        self._memory = memory
        self._refresh_s = refresh_s
        self._next_refresh = 0.0
        self._shown: set[int] = set()
        r = self.registry
        self.read = Counter("odds_consumer_entries_read", "Stream entries in committed batches", registry=r)
        self.outcomes = Counter(
            "odds_consumer_entries_processed",
            "Entries by what their batch did with them",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "odds_consumer_retries", "Retries after a transient failure", ["cause", "backend"], registry=r
        )
        self.batch_entries = Histogram(
            "odds_consumer_batch_entries", "Entries per committed batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.commit_seconds = Histogram(
            "odds_consumer_batch_commit_seconds",
            "Time to commit a batch in Postgres and record it in Redis",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.capture_to_commit = Histogram(
            "odds_consumer_capture_to_commit_seconds",
            "From an entry's capture time (its ts field) to its commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "odds_consumer_backlog_entries",
            "Undelivered plus pending entries of an owned shard",
            ["shard"],
            registry=r,
        )
        self.pending = Gauge(
            "odds_consumer_pending_entries",
            "Delivered, unacknowledged entries of an owned shard",
            ["shard"],
            registry=r,
        )
        self.owned = Gauge("odds_consumer_owned_shards", "Shards whose lease this consumer holds", registry=r)
        self.last_commit = Gauge(
            "odds_consumer_last_commit_timestamp_seconds", "Time of the last commit", registry=r
        )
        # Redis-wide, so every consumer reports the same values: aggregate them with max(), not sum().
        self.redis_used = Gauge("odds_redis_used_memory_bytes", "Memory Redis uses", registry=r)
        self.redis_max = Gauge("odds_redis_max_memory_bytes", "Redis maxmemory; 0 is no limit", registry=r)
        self.redis_growth = Gauge(
            "odds_redis_memory_growth_bytes_per_second",
            "Growth of Redis memory, smoothed over about a minute",
            registry=r,
        )
        self.redis_full_in = Gauge(
            "odds_redis_memory_full_in_seconds",
            "Time until Redis reaches maxmemory at the current growth; +Inf when not growing or unlimited",
            registry=r,
        )
        self.redis_policy = Gauge(
            "odds_redis_maxmemory_policy",
            "1 for Redis's current maxmemory-policy; anything but noeviction can evict pipeline keys",
            ["policy"],
            registry=r,
        )
        self.stream_memory = Gauge(
            "odds_redis_stream_memory_bytes", "Memory of an owned shard's stream", ["shard"], registry=r
        )
        # The configured count, so an alert can compare it with the shards all consumers own together.
        self.shards = Gauge("odds_consumer_shards", "Shards of the stream, as configured", registry=r)
        self.shards.set(keys.shards)
        self.forced_trimmed = Counter(
            "odds_consumer_entries_forced_trimmed",
            "Unacknowledged entries deleted to hold the hard cap (data loss)",
            registry=r,
        )
        # Present at zero, so rate() and increase() see the very first change after the first scrape.
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome)
        for cause, backend in RETRY_LABELS:
            self.retries.labels(cause, backend)

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve /metrics on a background thread; shut the returned server down to stop."""
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def batch_committed(self, captured_ms: Iterable[int], counts: dict[str, int], commit_s: float) -> None:
        """Record a committed batch from the counts its Outcome carries, and each entry's age at commit.

        captured_ms are the capture times of the batch's valid entries, already checked to lie within the
        wire format's years: a raw ts of a poison entry could be any number, and overflow a float here.
        """
        now_s = time.time()
        self.read.inc(counts.get("read", 0))
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome).inc(counts.get(outcome, 0))
        self.batch_entries.observe(counts.get("read", 0))
        self.commit_seconds.observe(commit_s)
        self.last_commit.set(now_s)
        for ts_ms in captured_ms:
            # Producer and consumer clocks differ a little; a negative age would only be noise.
            self.capture_to_commit.observe(max(0.0, now_s - ts_ms / 1000))

    def lost_before_reclaim(self, count: int) -> None:
        """Pending entries trimmed before this consumer could reclaim them: counted as lost_trimmed too."""
        self.outcomes.labels("lost_trimmed").inc(count)

    def retried(self, error: Exception) -> None:
        self.retries.labels(getattr(error, "cause", "unknown"), _backend(error)).inc()

    def refresh(self, owned: Iterable[int]) -> None:
        """Update the backlog and pending gauges of the owned shards, at most every refresh_s.

        The count of owned shards costs no Redis call, so it is always current: shards change hands
        within a lease renewal, much faster than refresh_s.
        """
        self.owned.set(len(set(owned)))
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_s
        owned = set(owned)
        for n in self._shown - owned:
            # Another consumer reports this shard now; a stale series here would count it twice.
            for gauge in (self.backlog, self.pending, self.stream_memory):
                gauge.remove(str(n))
        for n in sorted(owned):
            stream = self._keys.shard(n)
            pending, undelivered = group_backlog(self._client, stream, self._keys.group)
            self.pending.labels(str(n)).set(pending)
            self.backlog.labels(str(n)).set(pending + undelivered)
            self.stream_memory.labels(str(n)).set(self._client.memory_usage(stream) or 0)
        self._shown = owned
        memory = self._memory.last
        if memory is not None:
            self.redis_used.set(memory.used_bytes)
            self.redis_max.set(memory.max_bytes)
            self.redis_growth.set(self._memory.growth.bytes_per_s)
            self.redis_full_in.set(self._memory.growth.seconds_until(memory))
            self.redis_policy.clear()
            self.redis_policy.labels(memory.policy).set(1)


def _backend(error: BaseException) -> str:
    cause = error.__cause__
    if isinstance(cause, redis.RedisError):
        return "redis"
    if isinstance(cause, psycopg.Error):
        return "postgres"
    text = str(error)
    # The classifiers in consumer.errors name the backend first, also when the error was not chained.
    return "redis" if text.startswith("redis") else "postgres" if text.startswith("postgres") else "other"
