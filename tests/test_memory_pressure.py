"""A Redis with a maxmemory, as production runs it: producers stop short, consumers drain a full Redis.

Each test starts a private redis-server with a small maxmemory and the noeviction policy (the only safe
one for streams and leases), so it can fill it without touching the machine's Redis.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import psycopg
import pytest
import redis

from consumer.daemon import Daemon
from consumer.localservers import RedisServer
from consumer.memory_watch import GROWTH_FIELD, SAMPLED_FIELD
from consumer.status import Thresholds, collect
from consumer.status_table import render
from consumer.stream import ShardStreams, encode_fingerprint
from consumer.sweep import FingerprintSweep
from producer.core import HIGH_WATER, PublishRefused
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys
from shared.memory import read_memory
from shared.settings import Settings
from shared.wire import Snapshot
from tests.history import compare, expected_history, stored_history
from tests.support import drain

TS = 1_795_000_000_000
MAXMEMORY = 6 * 1024 * 1024
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def small_redis(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    config = {"maxmemory": str(MAXMEMORY), "maxmemory-policy": "noeviction"}
    with RedisServer(tmp_path, config=config) as server:
        yield server


def simulator() -> Simulator:
    # 120 feeds of 20 markets: about 1.7 kB an entry, so a few dozen cycles fill 6 MB
    spec = SimulationSpec(events=40, bookmakers=("sportybet", "bet9ja", "betking"), markets=20, seed=5)
    return Simulator(spec)


def publish_until(publisher: Publisher, sim: Simulator, held_back: str, published: list[Snapshot]) -> int:
    """Publish cycles until the producer holds entries back for the given reason; returns the cycles."""
    for cycle in range(1, 400):
        snapshots = sim.cycle(TS + cycle * 1000)
        published += snapshots
        if publisher.publish_cycle(snapshots).held_back == held_back:
            return cycle
    raise AssertionError(f"the producer never held entries back for {held_back}")


def test_the_producer_stops_at_the_high_water_mark_without_raising(small_redis: RedisServer) -> None:
    # Given a producer with a high-water mark at 60 % of a 6 MB Redis, and no consumer
    keys = Keys("odds:snapshots", "odds-writers", 4)
    publisher = Publisher(redis.Redis.from_url(small_redis.url), keys, high_water=0.6)
    # When it publishes cycle after cycle
    publish_until(publisher, simulator(), HIGH_WATER, [])
    # Then it holds entries back before Redis is full, without an exception, and Redis still takes writes
    memory = read_memory(redis.Redis.from_url(small_redis.url))
    assert memory.share is not None and 0.5 < memory.share < 0.8, memory
    assert publisher.buffered > 0
    redis.Redis.from_url(small_redis.url).set("still-room", "yes")


def test_consumers_drain_a_full_redis_by_themselves(
    small_redis: RedisServer, settings: Settings, db: Conn
) -> None:
    # Given a producer without a high-water mark that filled Redis until it refused writes
    settings = settings.with_(redis_url=small_redis.url, batch_size=200, stream="odds:snapshots")
    publisher = Publisher.from_settings(settings.with_(producer_high_water=1.0))
    sim, published = simulator(), []
    publish_until(publisher, sim, "out_of_memory", published)
    client = redis.Redis.from_url(small_redis.url)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.xadd("odds:snapshots:0", {"probe": "x" * 1000})
    # When a consumer starts against that full Redis (its membership, leases and group all need writes)
    daemon = Daemon(settings)
    try:
        drain(daemon)
        # And the producer, now that memory came back, sends what it buffered; the consumer drains it too
        while publisher.buffered:
            publisher.core._retry_at = 0.0  # its backoff is not what this test is about
            publisher.flush()
            drain(daemon)
        # And the consumer trims what it acknowledged, as it does every trim interval
        for _ in range(200):
            if not read_memory(client).over(0.9):
                break
            daemon.step()
            time.sleep(daemon.settings.trim_interval_s / 4)
    finally:
        daemon.writer.discard()
    # Then every snapshot is stored as one in-order writer would have, and Redis has room again
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert not read_memory(client).over(0.9)


def test_status_is_unhealthy_above_the_high_water_mark_and_names_what_a_policy_could_evict(
    small_redis: RedisServer,
) -> None:
    client = redis.Redis.from_url(small_redis.url)
    keys = Keys("odds:snapshots", "odds-writers", 2)
    limits = Thresholds(high_water=0.5)
    # Given a Redis under its high-water mark
    assert not [p for p in collect(client, keys).problems(limits) if "high-water" in p]
    # When the stream takes it past the mark
    while not read_memory(client).over(0.6):
        client.xadd(keys.shard(0), {"data": b"x" * 10_000})
    status = collect(client, keys)
    # Then status says so, and how much of it is the streams'
    assert status.memory is not None and status.stream_bytes > MAXMEMORY // 4
    assert any("high-water mark of 50%" in p for p in status.problems(limits))
    # And a policy that can evict anything names what it puts at risk
    client.config_set("maxmemory-policy", "volatile-lru")
    assert any("can evict the shard leases" in p for p in collect(client, keys).problems(limits))
    client.config_set("maxmemory-policy", "allkeys-lru")
    risk = [p for p in collect(client, keys).problems(limits) if "can evict" in p]
    assert risk and "shard streams" in risk[0] and "fingerprints" in risk[0]


def test_fingerprints_of_feeds_not_seen_for_the_expiry_leave_redis(client: redis.Redis, keys: Keys) -> None:
    # Given fingerprints of feeds last seen two days ago, an hour ago, and one value too short to read
    now_ms = int(client.time()[0]) * 1000
    old = {f"old{i}|bk": encode_fingerprint(b"f" * 16, now_ms - 2 * 86_400_000) for i in range(2500)}
    recent = {f"new{i}|bk": encode_fingerprint(b"f" * 16, now_ms - 3_600_000) for i in range(2500)}
    client.hset(keys.fingerprints(1), mapping={**old, **recent, "odd|bk": b"short"})
    # When the sweep walks the hashes with a one-day expiry
    sweep = FingerprintSweep(client, keys, expiry_s=86_400)
    expired = sum(sweep.step() for _ in range(3))
    # Then exactly the old ones are gone
    left = {k.decode() for k in client.hkeys(keys.fingerprints(1))}
    assert expired == len(old)
    assert left == set(recent) | {"odd|bk"}


def test_a_read_only_replica_holds_entries_back_until_it_is_a_master_again(tmp_path: pathlib.Path) -> None:
    # Given a producer writing to a server that a failover then demotes to a replica of another
    with RedisServer(tmp_path / "a") as a, RedisServer(tmp_path / "b") as b:
        keys = Keys("odds:snapshots", "odds-writers", 2)
        publisher = Publisher(redis.Redis.from_url(a.url), keys)
        sim = simulator()
        admin = redis.Redis.from_url(a.url)
        admin.replicaof("127.0.0.1", b.port)
        # When it publishes
        result = publisher.publish_cycle(sim.cycle(TS))
        # Then it keeps the cycle, says why, and raises nothing
        assert (result.published, result.held_back) == (0, "read_only")
        # When the server is a master again, then the cycle goes out
        admin.replicaof("NO", "ONE")
        publisher.core._retry_at = 0.0
        assert publisher.flush() == result.buffered == len(sim.spec.bookmakers) * sim.spec.events


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            ["~odds:*", "+xadd", "+hincrby", "+hsetnx", "+hget", "+xlen"],
            r"grant the producer's Redis user \+info",
        ),
        (
            [
                "~elsewhere:*",
                "~odds:snapshots:meta",
                "+xadd",
                "+hincrby",
                "+hsetnx",
                "+hget",
                "+info",
                "+xlen",
            ],
            r"keys used as arguments \(XADD odds:snapshots:\d\); grant it",
        ),
    ],
)
def test_a_producer_missing_a_permission_is_told_what_to_fix(
    small_redis: RedisServer, rules: list[str], expected: str
) -> None:
    # Given a Redis user that may not do everything the producer needs
    admin = redis.Redis.from_url(small_redis.url)
    admin.acl_setuser(
        "scraper",
        enabled=True,
        passwords=["+pw"],
        keys=[r[1:] for r in rules if r[0] == "~"],
        commands=[r for r in rules if r[0] != "~"],
    )
    keys = Keys("odds:snapshots", "odds-writers", 2)
    url = f"redis://scraper:pw@127.0.0.1:{small_redis.port}/0"
    publisher = Publisher(redis.Redis.from_url(url), keys)
    # When it publishes, then it is told at once, with a reason, and the cycle stays buffered
    with pytest.raises(PublishRefused, match=expected):
        publisher.publish_cycle(simulator().cycle(TS))
    assert publisher.buffered == 120


def test_status_gives_the_time_until_full_from_the_growth_consumers_sampled(small_redis: RedisServer) -> None:
    client = redis.Redis.from_url(small_redis.url)
    keys = Keys("odds:snapshots", "odds-writers", 2)
    streams = ShardStreams(client, keys, "c1")
    # Given no consumer has sampled memory, then the time until full is unknown
    assert collect(client, keys).memory_full_in_s is None
    # When a consumer records a growth of 10 kB/s, sampled now
    now_ms = int(client.time()[0]) * 1000
    streams.record_stats({}, {GROWTH_FIELD: 10_000, SAMPLED_FIELD: now_ms})
    status = collect(client, keys)
    # Then status turns what is left below maxmemory into seconds at that rate
    assert status.memory is not None and status.memory_full_in_s is not None
    left = status.memory.max_bytes - status.memory.used_bytes
    assert status.memory_full_in_s == pytest.approx(left / 10_000, rel=0.05)
    assert "full in" in render(status, Thresholds())
    # And a sample older than a minute says nothing about now
    streams.record_stats({}, {SAMPLED_FIELD: now_ms - 120_000})
    assert collect(client, keys).memory_full_in_s is None
