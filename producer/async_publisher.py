"""The asyncio publisher: the same entries, buffer, backoff and pressure rules as Publisher, on redis.asyncio.

`await publisher.publish_cycle(snapshots)` encodes the cycle and buffers it, and returns: a background
task sends what is buffered. So a scraper's event loop never waits on Redis, whether Redis is healthy,
black-holed (the sender waits out its connect timeout on its own), or full. Encoding yields to the loop
between slices of a large cycle, and the sender between pipeline chunks, so no step holds the loop long.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

import redis
import redis.asyncio
import structlog
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from producer.core import HARD_CAP_COMMANDS, DeliveryReport, PublishCore, PublishRefused, PublishResult
from shared.keys import Keys
from shared.memory import RedisMemory, fullest, memory_from_info
from shared.redis_client import Client, client_options, connect
from shared.redis_errors import ClusterUnsupported, cluster_enabled, what_to_fix
from shared.settings import Settings
from shared.trim import enforce_hard_cap
from shared.wire import Snapshot

log = structlog.get_logger("producer")

ENCODE_SLICE = 500  # snapshots encoded between two yields to the event loop
# Entries per pipeline: packing a pipeline's commands holds the loop, so chunks are smaller than the sync
# publisher's: with 250 the longest stall stayed at a few ms while a buffered backlog went out.
PIPELINE_CHUNK = 250
ASYNC_CLIENT_GIVEN = (
    "the asyncio publisher was handed a single server's client: build it with from_settings, or hand it "
    "a redis.asyncio.RedisCluster"
)
AsyncClient = redis.asyncio.Redis | AsyncRedisCluster


class AsyncPublisher:
    """Use as `async with AsyncPublisher.from_settings(settings) as publisher:`, or aclose() it at the end."""

    def __init__(
        self,
        client: AsyncClient,
        keys: Keys,
        buffer_limit: int = 100_000,
        high_water: float = 0.8,
        hard_cap: int = 1_000_000,
        hard_cap_client: Client | None = None,
        on_delivery: DeliveryReport | None = None,
        cluster_client: Callable[[], AsyncRedisCluster] | None = None,
    ) -> None:
        self._client = client
        # Given when built from settings: a node of a Redis Cluster then gets a cluster client at first
        # contact (see _first_contact); a client handed in alone is used as it is.
        self._cluster_client = cluster_client
        self._keys = keys
        # The hard cap's trimming is rare and reads several replies in turn: it runs on a thread with a
        # sync client instead of a second, async copy of it. None leaves the cap to the consumers, as
        # producer_hard_cap off does: enforcing it deletes entries.
        self._hard_cap = hard_cap
        self._hard_cap_client = hard_cap_client
        self.core = PublishCore(keys, buffer_limit, high_water, on_delivery)
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._refused: PublishRefused | None = None
        self._published_since_result = 0
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncPublisher:
        timeout = settings.redis_timeout_s
        return cls(
            redis.asyncio.Redis.from_url(settings.redis_url, **client_options(timeout)),
            settings.keys,
            settings.producer_buffer,
            settings.producer_high_water,
            settings.stream_hard_cap,
            connect(settings.redis_url, timeout) if settings.producer_hard_cap else None,
            cluster_client=lambda: AsyncRedisCluster.from_url(settings.redis_url, **client_options(timeout)),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def buffered(self) -> int:
        return self.core.buffer.waiting

    async def publish(self, snapshot: Snapshot) -> PublishResult:
        return await self.publish_cycle((snapshot,))

    async def publish_cycle(self, snapshots: Iterable[Snapshot]) -> PublishResult:
        """Buffer a cycle for the sender and return at once.

        `published` counts what the sender delivered since the previous call. Raises PublishRefused when
        the sender met a refusal that no wait will fix (credentials, permissions) since the previous call.
        """
        if self._refused is not None:
            refused, self._refused = self._refused, None
            raise refused
        overflowed = 0
        iterator = iter(snapshots)
        while batch := list(itertools.islice(iterator, ENCODE_SLICE)):
            overflowed += self.core.add(batch)
            await asyncio.sleep(0)
        self._start_sender()
        self._wake.set()
        published, self._published_since_result = self._published_since_result, 0
        return self.core.result(published, overflowed)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the buffer is empty, up to timeout_s; whether it is."""
        self._start_sender()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        while self.buffered and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.buffered

    async def aclose(self, flush_timeout_s: float = 5.0) -> None:
        """Send what can still be sent within flush_timeout_s, stop the sender, close the connections."""
        if self.buffered and self._refused is None:
            await self.flush(flush_timeout_s)
        self._closing = True
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self._client.aclose()
        if self._hard_cap_client is not None:
            self._hard_cap_client.close()

    def _start_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_forever(), name="odds-sender")

    async def _send_forever(self) -> None:
        core = self.core
        while not self._closing:
            wait = core.wait_s(time.monotonic())
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # Woken by a publish; or when the backoff is over (infinite: nothing to send).
                    await asyncio.wait_for(self._wake.wait(), None if wait == float("inf") else wait)
                continue
            try:
                self._published_since_result += await self._flush_once()
            except PublishRefused as exc:
                log.error("producer_refused", error=str(exc))
                self._refused = exc
                self._wake.clear()
                await self._wake.wait()  # the next publish raises it; then try again

    async def _first_contact(self) -> None:
        """A node of a Redis Cluster gets a cluster client, when the URL is known; else it is refused at
        once, before anything is written (some entries would be taken, others redirected)."""
        if isinstance(self._client, AsyncRedisCluster):
            return
        try:
            clustered = cluster_enabled(await self._client.info("cluster"))
        except redis.ResponseError:
            clustered = False  # INFO refused, or unknown to a Redis-compatible server: MOVED would tell
        if not clustered:
            return
        if self._cluster_client is None:
            raise PublishRefused(what_to_fix(ClusterUnsupported(ASYNC_CLIENT_GIVEN), "producer"))
        await self._client.aclose()
        self._client = self._cluster_client()

    async def _memory(self) -> RedisMemory:
        """The server's memory, or that of the cluster master closest to full (as read_memory reads it)."""
        if not isinstance(self._client, AsyncRedisCluster):
            return memory_from_info(await self._client.info("memory"))
        replies = await self._client.info("memory", target_nodes=AsyncRedisCluster.PRIMARIES)
        return fullest([memory_from_info(info) for info in replies.values()])

    async def _flush_once(self) -> int:
        core = self.core
        sent = 0
        try:
            if not core.shard_count_known:
                await self._first_contact()
                pipe = self._client.pipeline(transaction=False)
                # Either pipeline type queues the same two commands.
                replies = await core.shard_count_commands(pipe).execute(raise_on_error=False)  # type: ignore[type-var]
                if not core.shard_count_replies(replies, time.monotonic()):
                    return 0
            while True:
                if core.memory_due(time.monotonic()):
                    core.memory_read(await self._memory(), time.monotonic())
                chunk = core.next_chunk(time.monotonic(), PIPELINE_CHUNK)
                if not chunk:
                    break
                pipe = self._client.pipeline(transaction=False)
                for entry in chunk:
                    pipe.xadd(entry.stream, entry.fields)  # type: ignore[arg-type]
                pipe.hincrby(self._keys.stats, "published", core.counter_increment(chunk))
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except redis.RedisError as exc:
                    core.lost_contact(chunk, exc, time.monotonic())
                    break
                delivered = core.chunk_done(chunk, replies, time.monotonic())
                sent += delivered
                if delivered < len(chunk):
                    break
        except redis.RedisError as exc:
            core.failed(exc, time.monotonic())
        if sent and self._hard_cap_client is not None:
            try:
                await asyncio.to_thread(
                    enforce_hard_cap,
                    self._hard_cap_client,
                    self._keys.all_shards(),
                    self._hard_cap,
                    self._keys.stats,
                )
            except redis.RedisError as exc:
                core.failed(exc, time.monotonic(), HARD_CAP_COMMANDS)
        return sent
