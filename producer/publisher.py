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
from redis.cluster import RedisCluster

from producer.buffer import Pending
from producer.core import HARD_CAP_COMMANDS, DeliveryReport, PublishCore, PublishRefused, PublishResult
from shared.backlog import group_backlog
from shared.counters import read_totals
from shared.keys import Keys
from shared.memory import read_memory
from shared.redis_client import Client, connect, first_contact, refresh_topology
from shared.redis_errors import ClusterUnsupported, NotReplicated, TopologyChanged, what_to_fix
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
        wait_replicas: int = 0,
        wait_timeout_ms: int = 500,
    ) -> None:
        self._client = client
        self._keys = keys
        # None leaves the hard cap to the consumers: enforcing it deletes entries (see producer_hard_cap).
        self._hard_cap = hard_cap
        self.core = PublishCore(keys, buffer_limit, high_water, on_delivery)
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self.total_forced_trimmed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        return cls(
            connect(settings.redis_url, settings.redis_timeout_s),
            settings.keys,
            settings.producer_buffer,
            settings.stream_hard_cap if settings.producer_hard_cap else None,
            settings.producer_high_water,
            wait_replicas=settings.producer_wait_replicas,
            wait_timeout_ms=settings.producer_wait_timeout_ms,
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
                replies = self._send(chunk, core.counter_increment(chunk))
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

    def _send(self, chunk: list[Pending], increment: int) -> list[object]:
        """XADD the chunk and add increment to the published counter, pipelined: one reply per entry, in
        order, then the counter's. A reply is an exception when that command failed, or when the replicas
        the producer waits for did not confirm it.

        WAIT counts the replicas that have what was written on its own connection before it, so with
        ODDS_PRODUCER_WAIT_REPLICAS it ends each server's pipeline. A cluster pipeline would send it to
        some node of its choosing; then each master gets a pipeline of its own, on its own connection.
        """
        replies: list[object] = [None] * (len(chunk) + 1)
        for target, indices, counts in self._routes(chunk):
            pipe = target.pipeline(transaction=False)
            for i in indices:
                pipe.xadd(chunk[i].stream, chunk[i].fields)  # type: ignore[arg-type]
            if counts:
                pipe.hincrby(self._keys.stats, "published", increment)
            if self._wait_replicas:
                pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
            try:
                got: list[object] = list(pipe.execute(raise_on_error=False))
            except redis.RedisError as exc:
                # Which commands got in is unknown: all are sent again (a consumer recognises repeats).
                got = [exc] * (len(indices) + counts + (1 if self._wait_replicas else 0))
            if self._wait_replicas:
                got = self._unless_replicated(got, len(indices))
            targets = [*indices, *([len(chunk)] if counts else [])]
            for at, reply in zip(targets, self._after_redirection(got, target), strict=True):
                replies[at] = reply
        return replies

    def _routes(self, chunk: list[Pending]) -> list[tuple[redis.Redis | RedisCluster, list[int], bool]]:
        """(client, indices of the chunk's entries it takes, whether it takes the counter) per pipeline."""
        everything = list(range(len(chunk)))
        if not self._wait_replicas or not isinstance(self._client, RedisCluster):
            return [(self._client, everything, True)]
        cluster = self._client
        by_node: dict[str, list[int]] = {}
        for i in everything:
            by_node.setdefault(cluster.get_node_from_key(chunk[i].stream).name, []).append(i)  # type: ignore[no-untyped-call]
        counter_node = cluster.get_node_from_key(self._keys.stats).name  # type: ignore[no-untyped-call]
        by_node.setdefault(counter_node, [])
        return [
            (cluster.get_redis_connection(cluster.get_node(node_name=name)), indices, name == counter_node)  # type: ignore[no-untyped-call]
            for name, indices in by_node.items()
        ]

    def _unless_replicated(self, got: list[object], xadds: int) -> list[object]:
        """The replies of one pipeline ended by WAIT, without WAIT's: each XADD that succeeded becomes a
        NotReplicated failure when fewer replicas than asked confirmed it."""
        *replies, confirmed = got
        if isinstance(confirmed, int) and confirmed >= self._wait_replicas:
            return replies
        missing = NotReplicated(
            f"WAIT: {confirmed if isinstance(confirmed, int) else confirmed!r} of {self._wait_replicas} "
            f"replicas confirmed within {self._wait_timeout_ms} ms"
        )
        return [r if isinstance(r, Exception) or i >= xadds else missing for i, r in enumerate(replies)]

    def _after_redirection(self, got: list[object], target: redis.Redis | RedisCluster) -> list[object]:
        """Replies of a master's own connection that a moved slot or a dead master explains: the cluster's
        map of nodes is read again, and the entries wait like after any passing failure."""
        if not isinstance(self._client, RedisCluster) or target is self._client:
            return got
        moved = (redis.exceptions.MovedError, redis.exceptions.AskError, redis.ConnectionError)
        if not any(isinstance(reply, moved) for reply in got):
            return got
        refresh_topology(self._client)
        return [TopologyChanged(str(reply)) if isinstance(reply, moved) else reply for reply in got]

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
