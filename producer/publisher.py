"""Publishing snapshots: an XADD per snapshot to its shard, pipelined, and never a wait on the database.

When Redis is briefly unreachable the entries wait in a bounded buffer and go out, in order, with the next
cycle that reaches Redis. While Redis is down, the publisher does not even try again until a backoff
delay has passed, so a scraper's cycle is not slowed by connect timeouts.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

import redis
import structlog

from producer.encoding import FeedEncoding
from shared.backlog import group_backlog
from shared.backoff import compute_backoff
from shared.keys import Keys, shard_of
from shared.redis_client import connect
from shared.settings import Settings
from shared.trim import trim
from shared.wire import Snapshot, envelope_fields

log = structlog.get_logger(__name__)

PIPELINE_CHUNK = 1000
FEED_CACHE_LIMIT = 100_000
Pending = tuple[str, dict[str, bytes]]


@dataclass(frozen=True)
class PublishResult:
    published: int  # entries that reached Redis in this call, including earlier buffered ones
    buffered: int  # entries waiting in the buffer after this call
    overflowed: int  # entries dropped from the buffer by this call because it was full


class Publisher:
    def __init__(
        self, client: redis.Redis, keys: Keys, buffer_limit: int = 100_000, hard_cap: int = 1_000_000
    ) -> None:
        self._client = client
        self._keys = keys
        self._buffer: deque[Pending] = deque()
        self._buffer_limit = buffer_limit
        self._hard_cap = hard_cap
        self._failures = 0
        self._retry_at = 0.0
        self.total_published = 0
        self._feeds: dict[tuple[str, str], tuple[str, FeedEncoding]] = {}
        self.total_overflowed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        return cls(
            connect(settings.redis_url, settings.redis_timeout_s),
            Keys(settings.stream, settings.group, settings.shards),
            settings.producer_buffer,
            settings.stream_hard_cap,
        )

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def publish(self, snapshot: Snapshot) -> PublishResult:
        return self.publish_cycle((snapshot,))

    def publish_cycle(self, snapshots: Iterable[Snapshot]) -> PublishResult:
        """Publish a cycle in pipelined XADDs; on a Redis failure keep it buffered for the next call."""
        overflowed = 0
        for snapshot in snapshots:
            if len(self._buffer) >= self._buffer_limit:
                self._buffer.popleft()  # the oldest odds are the least useful to keep
                overflowed += 1
            stream, data = self._encoded(snapshot)
            self._buffer.append((stream, envelope_fields(snapshot, data)))
        if overflowed:
            self.total_overflowed += overflowed
            log.error("producer_buffer_overflow", dropped=overflowed, limit=self._buffer_limit)
        published = self.flush()
        return PublishResult(published, len(self._buffer), overflowed)

    def _encoded(self, snapshot: Snapshot) -> tuple[str, bytes]:
        """The feed's shard stream and the snapshot's canonical data, from the feed's last encoding."""
        feed = (snapshot.event, snapshot.bookmaker)
        known = self._feeds.get(feed)
        if known is None:
            if len(self._feeds) >= FEED_CACHE_LIMIT:
                self._feeds.clear()  # feeds of finished events must not pile up in a long-running scraper
            stream = self._keys.shard(shard_of(*feed, self._keys.shards))
            encoding = FeedEncoding.of(snapshot.markets)
        else:
            stream, previous = known
            encoding = previous.next(snapshot.markets)
            if encoding is previous:
                return stream, encoding.data
        self._feeds[feed] = (stream, encoding)
        return stream, encoding.data

    def flush(self) -> int:
        """Send what is buffered; returns how many entries reached Redis."""
        if not self._buffer or time.monotonic() < self._retry_at:
            return 0
        sent = 0
        try:
            while self._buffer:
                chunk = list(islice(self._buffer, PIPELINE_CHUNK))
                pipe = self._client.pipeline(transaction=False)
                for stream, fields in chunk:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                pipe.hincrby(self._keys.stats, "published", len(chunk))
                pipe.execute()
                # A chunk that failed half-way is sent again whole: the consumer recognises the repeats.
                for _ in chunk:
                    self._buffer.popleft()
                sent += len(chunk)
            self._enforce_hard_cap()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            delay = compute_backoff(self._failures, base_s=0.2, cap_s=5.0)
            self._failures += 1
            self._retry_at = time.monotonic() + delay
            log.warning(
                "producer_redis_unavailable",
                error=str(exc),
                buffered=len(self._buffer),
                retry_in_s=round(delay, 2),
            )
        else:
            if self._failures:
                log.info("producer_redis_back", delivered=sent)
            self._failures = 0
        self.total_published += sent
        return sent

    def progress(self) -> dict[str, int]:
        """What consumers report having done (the group's counters) and the backlog they still have.

        For progress lines; empty while Redis is unreachable.
        """
        try:
            counters = self._client.hmget(self._keys.stats, ["changed", "unchanged", "dead_lettered"])
            backlog = sum(
                sum(group_backlog(self._client, s, self._keys.group)) for s in self._keys.all_shards()
            )
        except (redis.ConnectionError, redis.TimeoutError):
            return {}
        written, confirmed, dead = (int(v or 0) for v in counters)
        return {"written": written, "confirmed": confirmed, "dead_lettered": dead, "backlog": backlog}

    def _enforce_hard_cap(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        streams = self._keys.all_shards()
        for stream in streams:
            pipe.xlen(stream)
        for stream, length in zip(streams, pipe.execute()):
            if int(length) > self._hard_cap:
                trim(self._client, stream, self._hard_cap, self._keys.stats)
