"""The asyncio publisher: same entries and buffer as Publisher; the event loop never waits on Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from producer.async_publisher import AsyncPublisher
from producer.core import PublishRefused
from producer.publisher import Publisher
from shared.keys import Keys, shard_of
from shared.wire import Market, Snapshot
from tests.faultkit.proxy import TcpProxy

TS = 1_795_000_000_000


def cycle(n: int, ts: int) -> list[Snapshot]:
    return [
        Snapshot(f"ev{i}", "bet9ja", ts, (Market("1X2", "", {"1": 2.0 + ts % 7 / 10}),)) for i in range(n)
    ]


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[Keys]:
    keys = Keys(f"test:{uuid.uuid4().hex[:12]}", "odds-writers", 3)
    yield keys
    stale = [k for pattern in keys.patterns for k in client.scan_iter(match=pattern)]
    if stale:
        client.delete(*stale)


def async_client(url: str, timeout_s: float = 0.5) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def stream_data(client: redis.Redis, keys: Keys) -> dict[str, list[bytes]]:
    return {s: [f[b"data"] for _, f in client.xrange(s)] for s in keys.all_shards()}


def test_it_publishes_what_the_sync_publisher_does(redis_url: str, client: redis.Redis, keys: Keys) -> None:
    # Given three cycles, published once by each publisher under its own keys
    cycles = [cycle(20, TS + c) for c in range(3)]
    sync_keys = Keys(keys.stream + ":sync", keys.group, keys.shards)
    sync = Publisher(client, sync_keys)
    for snapshots in cycles:
        sync.publish_cycle(snapshots)

    async def publish() -> None:
        async with AsyncPublisher(async_client(redis_url), keys) as publisher:
            for snapshots in cycles:
                await publisher.publish_cycle(snapshots)
            assert await publisher.flush(timeout_s=30)

    asyncio.run(publish())
    # Then every shard holds the same entries, in the same order
    sync_data = stream_data(client, sync_keys)
    assert list(stream_data(client, keys).values()) == list(sync_data.values())
    assert sum(map(len, sync_data.values())) == 60
    for n, data in enumerate(sync_data.values()):
        events = {s.event for s in cycles[0] if shard_of(s.event, s.bookmaker, keys.shards) == n}
        assert len(data) == 3 * len(events)


def test_publishing_never_waits_on_a_black_holed_redis(
    redis_url: str, client: redis.Redis, keys: Keys
) -> None:
    # Given a publisher whose connection to Redis goes through a proxy that then swallows every byte
    proxy = TcpProxy("127.0.0.1", client.connection_pool.connection_kwargs["port"])
    proxy.start()

    async def scrape() -> tuple[list[int], float, int]:
        publisher = AsyncPublisher(async_client(f"redis://127.0.0.1:{proxy.port}/0"), keys)
        await publisher.publish_cycle(cycle(50, TS))
        assert await publisher.flush(timeout_s=30)
        proxy.blackhole()
        # When the scraper publishes five cycles while a ticker measures how late the loop runs it
        buffered, stall, stop = [], 0.0, False

        async def ticker() -> None:
            nonlocal stall
            while not stop:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                stall = max(stall, time.monotonic() - before - 0.005)

        tick = asyncio.create_task(ticker())
        for c in range(1, 6):
            buffered.append((await publisher.publish_cycle(cycle(50, TS + c))).buffered)
            await asyncio.sleep(0.05)
        stop = True
        await tick
        # And Redis comes back
        proxy.heal()
        delivered = await publisher.flush(timeout_s=60)
        await publisher.aclose()
        return buffered, stall, int(delivered)

    try:
        buffered, stall, delivered = asyncio.run(scrape())
    finally:
        proxy.close()
    # Then every call returned with its cycle buffered, and all of it went out once Redis answered
    print(f"longest event loop stall while Redis was black-holed: {stall * 1000:.1f} ms")
    assert buffered == [50, 100, 150, 200, 250]
    assert delivered == 1
    assert sum(map(len, stream_data(client, keys).values())) == 300


def test_a_refusal_reaches_the_scraper_at_its_next_call(tmp_path: object, redis_url: str) -> None:
    # Given a Redis user that may not add to the stream
    from consumer.localservers import RedisServer

    with RedisServer(tmp_path) as server:  # type: ignore[arg-type]
        redis.Redis.from_url(server.url).acl_setuser(
            "scraper",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+info", "+ping", "+hsetnx", "+hget"],
        )
        keys = Keys("odds:snapshots", "odds-writers", 2)

        async def publish() -> None:
            url = f"redis://scraper:pw@127.0.0.1:{server.port}/0"
            async with AsyncPublisher(async_client(url), keys) as publisher:
                await publisher.publish_cycle(cycle(5, TS))
                # When the sender has met the refusal
                while publisher._refused is None:
                    await asyncio.sleep(0.01)
                # Then the next call raises it, with the permission named
                with pytest.raises(PublishRefused, match="xadd"):
                    await publisher.publish_cycle(cycle(5, TS + 1))

        asyncio.run(publish())
