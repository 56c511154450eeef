"""What a publisher decides, apart from how it talks to Redis: shared by the sync and the asyncio publisher.

It encodes snapshots into stream entries, keeps them in the bounded buffer, hands senders chunks, and turns
each chunk's replies into what happens next: entries sent, entries kept for a retry after a backoff, or an
error raised for a person to fix. It also keeps producers short of Redis's memory limit (the high-water
mark), so that consumers always have the room their bookkeeping needs to drain a backlog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import structlog

from producer.buffer import SUPERSEDED, Pending, SendBuffer
from producer.encoding import FeedEncoding
from shared.backoff import compute_backoff
from shared.keys import Keys, shard_of
from shared.memory import RedisMemory
from shared.redis_errors import (
    Condition,
    condition,
    describe,
    what_to_fix,
)
from shared.shard_count import FIELD as SHARD_COUNT_FIELD
from shared.shard_count import ShardCountMismatch, check, parse
from shared.wire import Snapshot, envelope_fields

log = structlog.get_logger("producer")

PIPELINE_CHUNK = 1000
FEED_CACHE_LIMIT = 100_000
HIGH_WATER = "high_water"  # the reason entries are held back when Redis is at the high-water mark
# Re-read Redis memory at least this often; in between, estimate it from the bytes sent since.
MEMORY_RECHECK_S = 1.0
ENTRY_OVERHEAD_BYTES = 64  # an entry's id and field names in the stream, on top of its values


# What a refusal of the hard cap's commands means (see the producer_hard_cap setting).
HARD_CAP_COMMANDS = (
    "ODDS_PRODUCER_HARD_CAP=1: enforcing the hard cap needs XLEN, XINFO GROUPS, XPENDING and XTRIM; set it "
    "to 0 to leave the cap to the consumers"
)

# A sync or an asyncio pipeline: queuing a command returns the pipeline either way.
PipelineT = TypeVar(
    "PipelineT", redis.client.Pipeline, redis.asyncio.client.Pipeline, redis.asyncio.cluster.ClusterPipeline
)

# Called with the snapshots Redis took, after each pipeline, in the order they were sent.
DeliveryReport = Callable[[list[Snapshot]], None]


class PublishRefused(Exception):
    """Redis refuses this producer for a reason no wait will fix (credentials, permissions, a key of the
    wrong type). Raised to the scraper; the entries stay buffered and go out once it is fixed."""


@dataclass(frozen=True)
class PublishResult:
    published: int  # entries that reached Redis (with the asyncio publisher: since the previous call)
    buffered: int  # entries waiting in the buffer after this call
    overflowed: int  # entries the full buffer dropped in this call
    held_back: str | None = None  # why entries wait: a Redis condition or the high-water mark; None: flowing


class PublishCore:
    def __init__(
        self, keys: Keys, buffer_limit: int, high_water: float, on_delivery: DeliveryReport | None = None
    ) -> None:
        self.keys = keys
        self._on_delivery = on_delivery
        self.buffer = SendBuffer(buffer_limit)
        self._high_water = high_water
        self._feeds: dict[tuple[str, str], tuple[str, FeedEncoding]] = {}
        self._failures = 0
        self._retry_at = 0.0
        self.held_back: str | None = None
        self._memory: RedisMemory | None = None
        self._memory_read_at = float("-inf")
        self._sent_since_reading = 0
        self._uncounted = 0  # entries in Redis not yet in the published counter (negative: counted early)
        self.total_published = 0
        # Checked before the first entry is sent: entries sent to shards that no consumer reads would
        # wait there unseen (see shared/shard_count.py).
        self.shard_count_known = False

    @property
    def gated(self) -> bool:
        """Whether the high-water mark is in force (a share below 1)."""
        return 0 < self._high_water < 1

    @property
    def total_overflowed(self) -> int:
        return sum(self.buffer.dropped.values())

    # -- adding ------------------------------------------------------------------------------------------

    def add(self, snapshots: Iterable[Snapshot]) -> int:
        """Encode and buffer snapshots; returns how many entries the full buffer dropped meanwhile."""
        dropped = 0
        for snapshot in snapshots:
            stream, data = self._encoded(snapshot)
            dropped += self.buffer.append(Pending(stream, envelope_fields(snapshot, data), snapshot))
        if dropped:
            self._log_dropped(dropped)
        return dropped

    def _encoded(self, snapshot: Snapshot) -> tuple[str, bytes]:
        """The feed's shard stream and the snapshot's canonical data, from the feed's last encoding."""
        feed = (snapshot.event, snapshot.bookmaker)
        known = self._feeds.get(feed)
        if known is None:
            if len(self._feeds) >= FEED_CACHE_LIMIT:
                self._feeds.clear()  # feeds of finished events must not pile up in a long-running scraper
            stream = self.keys.shard(shard_of(*feed, self.keys.shards))
            encoding = FeedEncoding.of(snapshot.markets)
        else:
            stream, previous = known
            encoding = previous.next(snapshot.markets)
            if encoding is previous:
                return stream, encoding.data
        self._feeds[feed] = (stream, encoding)
        return stream, encoding.data

    def result(self, published: int, overflowed: int) -> PublishResult:
        return PublishResult(published, self.buffer.waiting, overflowed, self.held_back)

    # -- sending -----------------------------------------------------------------------------------------

    def wait_s(self, now: float) -> float:
        """How long until a send may be tried: 0 now, infinite while there is nothing to send."""
        return max(0.0, self._retry_at - now) if len(self.buffer) else float("inf")

    def memory_due(self, now: float) -> bool:
        """Whether the sender should read Redis memory before its next chunk."""
        if not self.gated or not len(self.buffer):
            return False
        return now - self._memory_read_at >= MEMORY_RECHECK_S or self._room() <= 0

    def memory_read(self, memory: RedisMemory, now: float) -> None:
        self._memory, self._memory_read_at, self._sent_since_reading = memory, now, 0

    def next_chunk(self, now: float, size: int = PIPELINE_CHUNK) -> list[Pending]:
        """The next entries to send; none when the buffer is empty or Redis is at the high-water mark."""
        if not len(self.buffer):
            return []
        if self.gated and self._room() <= 0:
            memory = self._memory
            self._hold(
                HIGH_WATER,
                now,
                used_bytes=memory.used_bytes if memory else None,
                max_bytes=memory.max_bytes if memory else None,
                high_water=self._high_water,
            )
            return []
        return self.buffer.take(size)

    def counter_increment(self, chunk: Sequence[Pending]) -> int:
        """What to add to the published counter along with this chunk, correcting earlier guesses."""
        return self._uncounted + len(chunk)

    def chunk_done(self, chunk: list[Pending], replies: Sequence[object], now: float) -> int:
        """Account for a pipeline of one XADD per chunk entry, then the counter increment; returns how many
        entries reached Redis. Raises PublishRefused when Redis refuses this producer.

        Each XADD succeeds or fails on its own (a full Redis refuses some and takes others as consumers free
        memory). Failed entries go back to the front of the buffer, in order, except one whose feed has a
        newer entry that did get in: sent later it would only be stale, so it counts as superseded.
        """
        xadds, counted = replies[: len(chunk)], replies[len(chunk)]
        failed = [i for i, reply in enumerate(xadds) if isinstance(reply, Exception)]
        sent = [e for e, reply in zip(chunk, xadds, strict=True) if not isinstance(reply, Exception)]
        self._uncounted += len(sent) - (
            0 if isinstance(counted, Exception) else self.counter_increment(chunk)
        )
        self._sent_since_reading += sum(e.size + ENTRY_OVERHEAD_BYTES for e in sent)
        self.buffer.sent(sent)  # releases their data: sizes first
        self.total_published += len(sent)
        if self._on_delivery is not None and sent:
            self._on_delivery([e.snapshot for e in sent])
        if not failed:
            self._flowing(len(sent))
            return len(sent)
        first = xadds[failed[0]]
        assert isinstance(first, redis.RedisError)
        newest_sent = {e.feed: i for i, e in enumerate(chunk) if not isinstance(xadds[i], Exception)}
        superseded = [chunk[i] for i in failed if newest_sent.get(chunk[i].feed, -1) > i]
        if superseded:
            self.buffer.drop(superseded, SUPERSEDED)
            self._log_dropped(len(superseded))
        kept = [chunk[i] for i in failed if newest_sent.get(chunk[i].feed, -1) < i]
        self._put_back(kept)
        self.failed(first, now, f"XADD {chunk[failed[0]].stream}")
        return len(sent)

    def shard_count_commands(self, pipe: PipelineT) -> PipelineT:
        """Queue recording our shard count (unless one is recorded) and reading the recorded one."""
        pipe.hsetnx(self.keys.meta, SHARD_COUNT_FIELD, self.keys.shards)
        pipe.hget(self.keys.meta, SHARD_COUNT_FIELD)
        return pipe

    def shard_count_replies(self, replies: Sequence[object], now: float) -> bool:
        """Whether entries may go: the recorded shard count is ours. A reply that is an error holds the
        entries like any failed call; a refusal, or another recorded count, raises PublishRefused."""
        meta = self.keys.meta
        for reply, command in zip(replies, (f"HSETNX {meta}", f"HGET {meta}"), strict=True):
            if isinstance(reply, redis.RedisError):
                self.failed(reply, now, command)
                return False
        try:
            check(parse(self.keys, replies[-1]), self.keys)  # type: ignore[arg-type]
        except ShardCountMismatch as exc:
            raise PublishRefused(f"{exc}") from exc
        self.shard_count_known = True
        return True

    def lost_contact(self, chunk: list[Pending], exc: redis.RedisError, now: float) -> None:
        """The pipeline failed as a whole: which entries got in is unknown, so all are sent again (a
        consumer recognises the repeats by their capture time)."""
        self._put_back(chunk)
        self.failed(exc, now)

    def failed(self, exc: redis.RedisError, now: float, command: str | None = None) -> None:
        """A call to Redis failed: wait with backoff, or raise what a person must fix.

        command names the call when known: Redis names a missing command, but not a key it refused.
        """
        kind = condition(exc)
        if kind is Condition.REFUSED:
            raise PublishRefused(refusal_message(exc, command)) from exc
        self._hold(kind.value, now, error=describe(exc))

    def _put_back(self, entries: list[Pending]) -> None:
        dropped = self.buffer.put_back(entries)
        if dropped:
            self._log_dropped(dropped)

    def _hold(self, reason: str, now: float, **details: object) -> None:
        delay = compute_backoff(self._failures, base_s=0.2, cap_s=5.0)
        self._failures += 1
        self._retry_at = now + delay
        self.held_back = reason
        event = "producer_redis_memory_high" if reason == HIGH_WATER else "producer_redis_unavailable"
        log.warning(event, reason=reason, buffered=len(self.buffer), retry_in_s=round(delay, 2), **details)

    def _flowing(self, delivered: int) -> None:
        if self.held_back is not None:
            log.info(
                "producer_redis_back", delivered=delivered, after=self.held_back, buffered=len(self.buffer)
            )
            self.held_back = None
        self._failures = 0

    def _room(self) -> float:
        """Bytes producers may still add below the high-water mark: the last reading, less what went since."""
        memory = self._memory
        if memory is None:
            return 1.0  # no reading yet: the first chunk goes, and the reading that precedes it decides
        if not memory.max_bytes:
            return float("inf")
        return self._high_water * memory.max_bytes - memory.used_bytes - self._sent_since_reading

    def _log_dropped(self, dropped: int) -> None:
        log.error(
            "producer_buffer_overflow",
            dropped=dropped,
            dropped_total=dict(self.buffer.dropped),
            buffered=len(self.buffer),
        )


def refusal_message(exc: redis.RedisError, command: str | None = None) -> str:
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoPermissionError) and "'info'" in text.lower():
        return (
            f"Redis refused INFO ({text}): the producer reads memory use for its high-water mark; grant the "
            "producer's Redis user +info, or set ODDS_PRODUCER_HIGH_WATER=1 to turn the mark off"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) and command is not None:
        exc = redis.exceptions.NoPermissionError(f"{text} ({command})")
    return what_to_fix(exc, "producer")
