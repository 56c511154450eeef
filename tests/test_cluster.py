"""The pipeline on a Redis Cluster of three masters with a replica each: REDIS_URL names one node.

Every key of a shard shares the shard stream's name as a hash tag, so a shard's scripts run in its slot;
the shards spread over the masters. The history must be what one in-order writer would have stored, and
the operator commands must see every shard, whichever master holds it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg
import pytest
import redis
import redis.asyncio
from redis.cluster import RedisCluster

from consumer.__main__ import main
from consumer.daemon import Daemon
from consumer.dlq import DeadLetters, Selection
from consumer.localservers import free_port
from consumer.memory_watch import MemoryWatch
from consumer.metrics import ConsumerMetrics
from consumer.status import collect
from producer.async_publisher import AsyncPublisher
from producer.core import PublishRefused
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import shard_of
from shared.redis_client import connect
from shared.settings import Settings
from shared.wire import InvalidEntry, Market, Snapshot, parse_envelope
from tests.faultkit.cluster import LocalCluster
from tests.history import compare, count_snapshot_rows, expected_history, stored_history
from tests.support import connection_flags, counters, dead_letter, dead_letters, drain, stepped_daemon
from tests.test_dlq import snapshot_fields
from tests.test_metrics import scrape, value

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(Path(tmp_path_factory.mktemp("cluster")), masters=3, replicas=1) as local:
        yield local


@pytest.fixture
def on_cluster(cluster: LocalCluster, settings: Settings) -> Settings:
    return settings.with_(redis_url=cluster.url, shards=16)


@pytest.fixture
def daemon(on_cluster: Settings) -> Iterator[Daemon]:
    with stepped_daemon(on_cluster) as d:
        yield d


def masters_holding(client: RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(key).name for key in keys}  # type: ignore[no-untyped-call]


def test_connect_gives_a_cluster_client_for_a_node(cluster: LocalCluster, on_cluster: Settings) -> None:
    client = connect(on_cluster.redis_url, 2.0)
    assert isinstance(client, RedisCluster)
    # and the shards of the default count fall on every master
    assert len(masters_holding(client, on_cluster.keys.all_shards())) == 3


def test_history_on_a_cluster_equals_one_in_order_writer(
    on_cluster: Settings, daemon: Daemon, db: Conn
) -> None:
    # Given cycles of 36 feeds published through a node of the cluster, some feeds changing each cycle
    sim = Simulator(
        SimulationSpec(events=12, bookmakers=("sportybet", "bet9ja", "betking"), markets=6, change_rate=0.3)
    )
    publisher = Publisher.from_settings(on_cluster)
    published = []
    for cycle in range(5):
        snapshots = sim.cycle(TS + cycle * 1000)
        result = publisher.publish_cycle(snapshots)
        assert result.published == len(snapshots) and result.buffered == 0
        published += snapshots
        drain(daemon)
    # Then the stored history is exactly what one in-order writer would store
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert (report.lost, report.duplicated, report.stale) == ([], [], [])
    # and the counters, summed over the shards on three masters, agree with Postgres
    totals = counters(daemon.client, on_cluster.keys)
    assert totals["read"] == totals["published"] == len(published)
    assert totals["changed"] == count_snapshot_rows(db)
    assert totals["changed"] + totals["unchanged"] == len(published)


def test_status_and_dead_letters_see_every_shard_of_the_cluster(
    on_cluster: Settings, daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a malformed entry written by hand to every shard, and one good snapshot
    client = daemon.client
    keys = on_cluster.keys
    bad = {b"v": b"1", b"event": b"sr:1", b"bookmaker": b"bk", b"ts": b"x", b"data": b"\x80"}
    with pytest.raises(InvalidEntry) as refused:
        parse_envelope(bad, on_cluster.max_entry_bytes)
    for stream in keys.all_shards():
        client.xadd(stream, bad)  # type: ignore[arg-type]
    Publisher.from_settings(on_cluster).publish(
        Snapshot("sr:2", "bet9ja", TS, (Market("1X2", "", {"1": 2.0, "X": 3.0, "2": 4.0}),))
    )
    drain(daemon)
    # Then each bad entry is a dead letter, listed once with its reason, and status sees them all
    letters = list(DeadLetters(client, keys).scan())
    assert len(letters) == len(dead_letters(client, keys)) == keys.shards
    assert {letter.shard for letter in letters} == set(range(keys.shards))
    assert {letter.reason for letter in letters} == {str(refused.value)}
    status = collect(client, keys)
    assert status.dead_letters == keys.shards and status.backlog == 0
    assert status.counters["dead_lettered"] == keys.shards
    # When the operator lists them and purges them through the command line
    capsys.readouterr()  # what the daemon logged
    assert main(["dlq", "list", "--json", *connection_flags(on_cluster)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(d["id"] for d in listed) == sorted(letter.id for letter in letters)
    assert main(["dlq", "purge", "--all", "--yes", *connection_flags(on_cluster)]) == 0
    # Then none is left on any master
    assert DeadLetters(client, keys).count() == 0


def test_replay_on_a_cluster_puts_each_letter_on_its_feeds_shard_once(
    on_cluster: Settings, daemon: Daemon
) -> None:
    # Given dead letters kept with shard 0, of feeds that hash to shard 0 and to shards on other masters
    client = daemon.client
    keys = on_cluster.keys
    events = [f"sr:match:{i}" for i in range(12)]
    for event in events:
        dead_letter(client, keys, snapshot_fields(event), "postgres rejected the data")
    targets = {event: keys.shard(shard_of(event, "sportybet", keys.shards)) for event in events}
    assert len(masters_holding(cast(RedisCluster, client), list(targets.values()))) > 1
    # When all are replayed, twice
    letters = DeadLetters(client, keys)
    first, second = letters.replay(Selection()), letters.replay(Selection())
    # Then each is on the shard its feed hashes to, once, and nothing is left to replay
    assert len(first.replayed) == len(events) and second.replayed == {}
    for event, shard in targets.items():
        found = [f for _, f in client.xrange(shard) if f[b"event"] == event.encode()]
        assert found == [snapshot_fields(event)]
    assert letters.count() == 0
    assert counters(client, keys)["replayed"] == len(events)


def test_the_asyncio_publisher_built_from_settings_publishes_to_a_cluster(
    on_cluster: Settings, daemon: Daemon, db: Conn
) -> None:
    # Given a cycle published by an asyncio scraper through a node of the cluster
    snapshots = Simulator(SimulationSpec(events=15, bookmakers=("bet9ja", "sportybet"), markets=3)).cycle(TS)

    async def publish() -> bool:
        async with AsyncPublisher.from_settings(on_cluster) as publisher:
            await publisher.publish_cycle(snapshots)
            return await publisher.flush(10.0)

    assert asyncio.run(publish())
    drain(daemon)
    # Then every snapshot reached its shard, wherever its master is, and is stored as one writer would
    report = compare(expected_history(snapshots), stored_history(db))
    assert report.ok, report.summary()
    assert counters(daemon.client, on_cluster.keys)["published"] == len(snapshots)


def test_an_asyncio_publisher_handed_a_servers_client_refuses_a_cluster(
    cluster: LocalCluster, on_cluster: Settings
) -> None:
    snapshot = Snapshot("sr:4", "bet9ja", TS, (Market("1X2", "", {"1": 2.0, "X": 3.0, "2": 4.0}),))

    async def publish() -> None:
        publisher = AsyncPublisher(redis.asyncio.Redis.from_url(cluster.url), on_cluster.keys)
        try:
            await publisher.publish(snapshot)
            await publisher.flush(2.0)
            await publisher.publish(snapshot)  # raises what the sender met
        finally:
            await publisher.aclose(flush_timeout_s=0)

    with pytest.raises(PublishRefused, match="handed a single server's client"):
        asyncio.run(publish())


def test_a_servers_client_that_meets_a_cluster_node_says_so(
    cluster: LocalCluster, on_cluster: Settings
) -> None:
    # Given a producer handed a client of one server, pointed at a node of the cluster
    publisher = Publisher(redis.Redis.from_url(cluster.url), on_cluster.keys)
    snapshot = Snapshot("sr:5", "bet9ja", TS, (Market("1X2", "", {"1": 2.0, "X": 3.0, "2": 4.0}),))
    # When it publishes, then it is refused before anything is written, and keeps the entry
    with pytest.raises(PublishRefused, match="names a node of a Redis Cluster"):
        publisher.publish(snapshot)
    assert publisher.buffered == 1


def test_a_producer_waiting_for_a_replica_holds_back_what_a_frozen_replica_has_not_confirmed(
    cluster: LocalCluster, on_cluster: Settings
) -> None:
    # Given a producer that waits for one replica, and the replica of one master frozen
    client = connect(on_cluster.redis_url, 2.0)
    assert isinstance(client, RedisCluster)
    publisher = Publisher(client, on_cluster.keys, wait_replicas=1, wait_timeout_ms=200)
    sim = Simulator(SimulationSpec(events=30, bookmakers=("sportybet", "bet9ja"), markets=2))
    first = sim.cycle(TS)
    assert publisher.publish_cycle(first).published == len(first)
    master = cluster.master_of(on_cluster.keys.shard(0))
    replica = cluster.replica_of(master)
    cycle = sim.cycle(TS + 1000)
    keys = on_cluster.keys
    on_master = [
        s
        for s in cycle
        if client.get_node_from_key(keys.shard(shard_of(s.event, s.bookmaker, keys.shards))).port  # type: ignore[no-untyped-call]
        == master.port
    ]
    assert 0 < len(on_master) < len(cycle)
    replica.pause()
    try:
        # When a cycle is published
        result = publisher.publish_cycle(cycle)
    finally:
        replica.resume()
    # Then what went to that master waits, as not replicated, and the rest counts as published
    assert result.held_back == "not_replicated"
    assert (result.published, result.buffered) == (len(cycle) - len(on_master), len(on_master))
    # and once the replica is back, it goes out
    deadline = time.monotonic() + 30
    while publisher.buffered and time.monotonic() < deadline:
        time.sleep(0.1)
        publisher.flush()
    assert publisher.buffered == 0 and publisher.total_published == len(first) + len(cycle)


def test_metrics_and_status_on_a_cluster_count_every_shard(
    on_cluster: Settings, daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given entries waiting on every shard, over the three masters, and a consumer's metrics
    client = daemon.client
    keys = on_cluster.keys
    for n, stream in enumerate(keys.all_shards()):
        for i in range(n % 3 + 1):
            client.xadd(stream, {"i": i})
    watch = MemoryWatch(client, daemon.streams)
    metrics = ConsumerMetrics(client, keys, watch, refresh_s=0)
    watch.sample()
    metrics.refresh(set(range(keys.shards)))
    server = metrics.serve(free_port(), addr="127.0.0.1")
    try:
        samples = scrape(server.server_address[1])
    finally:
        server.shutdown()
    # Then each shard's backlog gauge is what its stream holds, and memory is a master's reading
    for n in range(keys.shards):
        assert value(samples, "odds_consumer_backlog_entries", shard=str(n)) == client.xlen(keys.shard(n))
    assert watch.last is not None and value(samples, "odds_redis_used_memory_bytes") == watch.last.used_bytes
    # And status through the command line counts the same backlog
    capsys.readouterr()
    main(["status", "--json", *connection_flags(on_cluster)])
    report = json.loads(capsys.readouterr().out)
    assert report["backlog"] == sum(int(client.xlen(s)) for s in keys.all_shards())


def test_scripts_lost_by_a_promoted_replica_are_loaded_again(
    on_cluster: Settings, daemon: Daemon, db: Conn
) -> None:
    # Given a consumer that has run its scripts, and every master's script cache then emptied, as a
    # promoted replica's is (the cache is not replicated)
    publisher = Publisher.from_settings(on_cluster)
    sim = Simulator(SimulationSpec(events=10, bookmakers=("bet9ja",), markets=2, change_rate=1.0))
    published = sim.cycle(TS)
    publisher.publish_cycle(published)
    drain(daemon)
    client = cast(RedisCluster, daemon.client)
    client.script_flush()
    assert not any(client.script_exists(daemon.streams._finish.sha))  # type: ignore[attr-defined]
    # When more is published, then it is read, written and acknowledged as before (NOSCRIPT reloads)
    later = sim.cycle(TS + 1000)
    publisher.publish_cycle(later)
    drain(daemon)
    report = compare(expected_history(published + later), stored_history(db))
    assert report.ok, report.summary()
