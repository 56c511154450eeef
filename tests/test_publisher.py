"""The publisher on an in-memory Redis: shard routing, the outage buffer and its overflow."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys, shard_of
from shared.wire import Market, Snapshot, encode

KEYS = Keys("t:snap", "g", 3)


def cycle(n: int, ts: int = 1_795_000_000_000) -> list[Snapshot]:
    return [Snapshot(f"ev{i}", "bet9ja", ts, (Market("1X2", "", {"1": 2.0}),)) for i in range(n)]


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


def publisher(server: fakeredis.FakeServer, buffer_limit: int = 100) -> Publisher:
    # fakeredis has no INFO: the high-water mark is tested on a real Redis with a maxmemory.
    return Publisher(fakeredis.FakeRedis(server=server), KEYS, buffer_limit=buffer_limit, high_water=1.0)


def test_each_snapshot_goes_to_the_shard_of_its_feed(server: fakeredis.FakeServer) -> None:
    # Given a cycle of 30 feeds
    snapshots = cycle(30)
    # When published
    result = publisher(server).publish_cycle(snapshots)
    # Then each shard holds exactly the feeds the shard function gives it
    client = fakeredis.FakeRedis(server=server)
    for n in range(KEYS.shards):
        events = [fields[b"event"].decode() for _, fields in client.xrange(KEYS.shard(n))]
        assert events == [s.event for s in snapshots if shard_of(s.event, s.bookmaker, KEYS.shards) == n]
    assert result.published == len(snapshots) and result.buffered == 0


def test_cycles_published_while_redis_is_down_are_buffered_then_sent_in_order(
    server: fakeredis.FakeServer,
) -> None:
    # Given Redis is unreachable for two cycles
    pub = publisher(server)
    server.connected = False
    first, second = pub.publish_cycle(cycle(5, ts=1)), pub.publish_cycle(cycle(5, ts=2))
    # When Redis is back and the publisher flushes
    server.connected = True
    pub.core._retry_at = 0.0  # skip the backoff wait: the test is about what is sent, not when
    sent = pub.flush()
    # Then nothing was lost and each feed's entries arrive in capture order
    assert (first.published, second.buffered, sent) == (0, 10, 10)
    client = fakeredis.FakeRedis(server=server)
    ts_per_event: dict[bytes, list[bytes]] = {}
    for n in range(KEYS.shards):
        for _, fields in client.xrange(KEYS.shard(n)):
            ts_per_event.setdefault(fields[b"event"], []).append(fields[b"ts"])
    assert all(ts == [b"1", b"2"] for ts in ts_per_event.values()) and len(ts_per_event) == 5


def test_overflow_drops_the_oldest_and_is_counted(server: fakeredis.FakeServer) -> None:
    # Given a buffer of 4 and Redis down
    pub = publisher(server, buffer_limit=4)
    server.connected = False
    # When 6 snapshots are published
    result = pub.publish_cycle(cycle(6))
    # Then 2 are counted as overflow and the newest 4 wait
    assert (result.overflowed, result.buffered, pub.total_overflowed) == (2, 4, 2)


def test_progress_reports_the_consumers_counters_and_their_backlog(
    server: fakeredis.FakeServer,
) -> None:
    # Given a published cycle and counters as consumers leave them
    pub = publisher(server)
    pub.publish_cycle(cycle(7))
    fakeredis.FakeRedis(server=server).hset(KEYS.stats, mapping={"changed": 4, "unchanged": 2})
    # When progress is asked for
    progress = pub.progress()
    # Then it shows them, and the backlog: the whole cycle, as no consumer has read any of it
    assert progress == {"written": 4, "confirmed": 2, "dead_lettered": 0, "backlog": 7}


def test_progress_is_empty_while_redis_is_down(server: fakeredis.FakeServer) -> None:
    pub = publisher(server)
    server.connected = False
    assert pub.progress() == {}


def test_a_feed_is_encoded_anew_when_any_of_its_markets_changed(server: fakeredis.FakeServer) -> None:
    # Given a feed published once, then with the same market objects, then with one market replaced
    kept, moved = Market("1X2", "", {"1": 2.0, "2": 3.0}), Market("BTTS", "", {"Yes": 1.8, "No": 2.0})
    moved_again = Market("BTTS", "", {"Yes": 1.7, "No": 2.1})
    snapshots = [
        Snapshot("ev", "bet9ja", 1, (kept, moved)),
        Snapshot("ev", "bet9ja", 2, (kept, moved)),
        Snapshot("ev", "bet9ja", 3, (kept, moved_again)),
    ]
    pub = publisher(server)
    for s in snapshots:
        pub.publish(s)
    # Then every entry carries exactly the data its own snapshot encodes to
    stream = KEYS.shard(shard_of("ev", "bet9ja", KEYS.shards))
    sent = [fields[b"data"] for _, fields in fakeredis.FakeRedis(server=server).xrange(stream)]
    assert sent == [encode(s)["data"] for s in snapshots]
    assert sent[1] == sent[0] != sent[2]


def test_a_producer_waiting_for_a_replica_that_no_server_has_keeps_its_entries(
    client: redis.Redis, keys: Keys
) -> None:
    # Given a producer that waits for one replica, on a server without any
    replicas = int(client.info("replication")["connected_slaves"])
    publisher = Publisher(client, keys, wait_replicas=replicas + 1, wait_timeout_ms=50)
    snapshots = Simulator(SimulationSpec(events=5, bookmakers=("bet9ja",), markets=2)).cycle(
        1_795_000_000_000
    )
    # When a cycle is published
    result = publisher.publish_cycle(snapshots)
    # Then nothing counts as published: it stays buffered, held back as not replicated
    assert (result.published, result.buffered, result.held_back) == (0, len(snapshots), "not_replicated")
