"""Publishing snapshots: an XADD per snapshot to its shard, pipelined, and never a wait on the database.

When Redis cannot take entries (unreachable, full, a demoted read-only master, failing persistence) they wait
in a bounded buffer and go out, in order, with a later call that reaches Redis; while it cannot, the
publisher does not even try again until a backoff delay has passed, so a scraper's cycle is not slowed by
connect timeouts. What decides all this is in producer/core.py, shared with the asyncio publisher.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from producer.core import HARD_CAP_COMMANDS, DeliveryReport, PublishCore, PublishRefused, PublishResult
from shared.backlog import group_backlog
from shared.counters import read_totals
from shared.keys import Keys
from shared.memory import read_memory
from shared.redis_client import Client, connect, first_contact
from shared.redis_errors import ClusterUnsupported, what_to_fix
from shared.settings import Settings
from shared.trim import enforce_hard_cap
from shared.wire import Snapshot


class Publisher:
    def __init__(
        self,
        client: Client,
        keys: Keys,
        buffer_limit: int = 100_000,
        hard_cap: int | None = None,
        high_water: float = 0.8,
        on_delivery: DeliveryReport | None = None,
    ) -> None:
        self._client = client
        self._keys = keys
        # None leaves the hard cap to the consumers: enforcing it deletes entries (see producer_hard_cap).
        self._hard_cap = hard_cap
        self.core = PublishCore(keys, buffer_limit, high_water, on_delivery)
        self.total_forced_trimmed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        return cls(
            connect(settings.redis_url, settings.redis_timeout_s),
            settings.keys,
            settings.producer_buffer,
            settings.stream_hard_cap if settings.producer_hard_cap else None,
            settings.producer_high_water,
        )

    @property
    def buffered(self) -> int:
        return self.core.buffer.waiting

    @property
    def total_published(self) -> int:
        return self.core.total_published

    @property
    def total_overflowed(self) -> int:
        return self.core.total_overflowed

    def publish(self, snapshot: Snapshot) -> PublishResult:
        return self.publish_cycle((snapshot,))

    def publish_cycle(self, snapshots: Iterable[Snapshot]) -> PublishResult:
        """Publish a cycle in pipelined XADDs; what Redis cannot take now stays buffered for a later call.

        Raises PublishRefused only when Redis refuses this producer itself (credentials, permissions).
        """
        overflowed = self.core.add(snapshots)
        return self.core.result(self.flush(), overflowed)

    def flush(self) -> int:
        """Send what is buffered, if the backoff allows; returns how many entries reached Redis."""
        core = self.core
        if core.wait_s(time.monotonic()) > 0:
            return 0
        sent = 0
        try:
            if not core.shard_count_known and not self._first_contact():
                return 0
            while True:
                if core.memory_due(time.monotonic()):
                    core.memory_read(read_memory(self._client), time.monotonic())
                chunk = core.next_chunk(time.monotonic())
                if not chunk:
                    break
                pipe = self._client.pipeline(transaction=False)
                for entry in chunk:
                    pipe.xadd(entry.stream, entry.fields)  # type: ignore[arg-type]
                pipe.hincrby(self._keys.stats, "published", core.counter_increment(chunk))
                try:
                    replies = pipe.execute(raise_on_error=False)
                except redis.RedisError as exc:
                    core.lost_contact(chunk, exc, time.monotonic())
                    break
                delivered = core.chunk_done(chunk, replies, time.monotonic())
                sent += delivered
                if delivered < len(chunk):
                    break
        except redis.RedisError as exc:
            core.failed(exc, time.monotonic())
        if sent and self._hard_cap is not None:
            try:
                self.total_forced_trimmed += enforce_hard_cap(
                    self._client, self._keys.all_shards(), self._hard_cap, self._keys.stats
                )
            except redis.RedisError as exc:
                core.failed(exc, time.monotonic(), HARD_CAP_COMMANDS)
        return sent

    def _first_contact(self) -> bool:
        """The checks before the first entry goes: the right client for the server, the same shard count."""
        try:
            first_contact(self._client)
        except ClusterUnsupported as exc:
            raise PublishRefused(what_to_fix(exc, "producer")) from exc
        commands = self.core.shard_count_commands(self._client.pipeline(transaction=False))
        return self.core.shard_count_replies(commands.execute(raise_on_error=False), time.monotonic())

    def progress(self) -> dict[str, int]:
        """What consumers report having done (the group's counters) and the backlog they still have.

        For progress lines; empty while Redis is unreachable.
        """
        try:
            counters = read_totals(self._client, self._keys)
            backlog = sum(
                sum(group_backlog(self._client, s, self._keys.group)) for s in self._keys.all_shards()
            )
        except redis.RedisError:
            return {}
        return {
            "written": counters.get("changed", 0),
            "confirmed": counters.get("unchanged", 0),
            "dead_lettered": counters.get("dead_lettered", 0),
            "backlog": backlog,
        }
