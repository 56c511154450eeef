"""The pipeline end to end on the real Redis and Postgres: changes, confirmations, order and idempotence."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import psycopg
import pytest
import redis
import structlog

import consumer.batch
from consumer.batch import BatchProcessor, PreparedBatch
from consumer.daemon import Daemon
from consumer.decoding import ReusingDecoder
from consumer.errors import Transient
from consumer.plan import Entry
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys, shard_of
from shared.settings import Settings
from shared.wire import Market, Snapshot, encode
from tests.history import compare, count_snapshot_rows, expected_history, stored_history
from tests.support import counters, dead_letters, drain, fingerprints, stepped_daemon

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def daemon(settings: Settings) -> Iterator[Daemon]:
    with stepped_daemon(settings) as d:
        yield d


@pytest.fixture
def publisher(settings: Settings) -> Publisher:
    return Publisher.from_settings(settings)


def stats(client: redis.Redis, keys: Keys) -> dict[str, int]:
    return counters(client, keys)


def one(odds: float, ts: int, event: str = "sr:match:1") -> Snapshot:
    return Snapshot(event, "sportybet", ts, (Market("1X2", "", {"1": odds, "X": 3.2, "2": 3.9}),))


def test_history_equals_one_in_order_writer(
    settings: Settings, daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given six simulated cycles of 30 feeds, some of them changing each cycle
    sim = Simulator(
        SimulationSpec(
            events=10, bookmakers=("sportybet", "bet9ja", "betking"), markets=8, change_rate=0.3, seed=7
        )
    )
    published = [s for c in range(6) for s in sim.cycle(TS + c * 1000)]
    for c in range(6):
        publisher.publish_cycle(published[c * 30 : (c + 1) * 30])
    # When a consumer drains the stream
    drain(daemon)
    # Then the stored history is what one in-order writer computes, and rows written equal the changes
    expected = expected_history(published)
    report = compare(expected, stored_history(db))
    assert report.ok, report.summary()
    changes = sum(len(runs) for runs in expected.values())
    assert count_snapshot_rows(db) == changes == stats(client, keys)["changed"]
    assert stats(client, keys)["unchanged"] == len(published) - changes


def test_equal_content_in_another_order_only_confirms(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given a stored snapshot
    publisher.publish(one(2.0, TS))
    drain(daemon)
    # When another publisher XADDs the same odds with markets and outcomes in another order
    data = msgpack.packb(
        {"markets": [{"outcomes": {"2": 3.9, "X": 3.2, "1": 2}, "specifier": "", "market": "1X2"}]}
    )
    stream = keys.shard(shard_of("sr:match:1", "sportybet", keys.shards))
    client.xadd(
        stream, {"v": "1", "event": "sr:match:1", "bookmaker": "sportybet", "ts": TS + 500, "data": data}
    )
    drain(daemon)
    # Then there is still one snapshot row, confirmed at the later capture time
    rows = db.execute(
        "SELECT (extract(epoch FROM last_confirmed_at) * 1000)::bigint FROM snapshots"
    ).fetchall()
    assert rows == [(TS + 500,)]


def test_unchanged_snapshot_needs_no_decode(
    daemon: Daemon, publisher: Publisher, db: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a stored cycle of 20 feeds
    sim = Simulator(
        SimulationSpec(events=10, bookmakers=("sportybet", "bet9ja"), markets=10, change_rate=0.0)
    )
    publisher.publish_cycle(sim.cycle(TS))
    drain(daemon)
    decodes = []

    decode = ReusingDecoder.decode

    def counting(self: ReusingDecoder, data: bytes, *, digest: bytes | None = None, feed: str = "") -> object:
        decodes.append(data)
        return decode(self, data, digest=digest, feed=feed)

    monkeypatch.setattr(ReusingDecoder, "decode", counting)
    # When the next cycle repeats every snapshot's odds
    publisher.publish_cycle(sim.cycle(TS + 1000))
    drain(daemon)
    # Then all 20 were confirmed and no market was decoded
    assert decodes == []
    assert db.execute("SELECT count(*) FROM snapshots WHERE last_confirmed_at > captured_at").fetchone() == (
        20,
    )


def test_same_snapshot_published_twice_is_one_row(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    publisher.publish(one(2.0, TS))
    publisher.publish(one(2.0, TS))
    drain(daemon)
    assert count_snapshot_rows(db) == 1 and stats(client, keys)["duplicate"] == 1


def test_stale_entry_is_acknowledged_and_changes_nothing(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given a feed stored as of TS + 1000
    publisher.publish(one(2.0, TS + 1000))
    drain(daemon)
    before = stored_history(db)
    # When an entry captured earlier, with other odds, arrives late
    publisher.publish(one(5.0, TS))
    drain(daemon)
    # Then it is counted as stale and the history is unchanged
    assert stored_history(db) == before and stats(client, keys)["stale"] == 1


def test_lost_fingerprint_hash_heals_from_postgres(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given a stored cycle, and Redis then losing the fingerprint hash
    sim = Simulator(SimulationSpec(events=8, bookmakers=("sportybet",), markets=5, change_rate=0.0))
    publisher.publish_cycle(sim.cycle(TS))
    drain(daemon)
    rows = count_snapshot_rows(db)
    client.delete(*keys.all_fingerprints())
    # When the next, unchanged cycle arrives
    publisher.publish_cycle(sim.cycle(TS + 1000))
    drain(daemon)
    # Then no duplicate row was written, and the hashes are filled again
    assert count_snapshot_rows(db) == rows
    assert len(fingerprints(client, keys)) == rows


class Crash(BaseException):
    """Stands for the process dying: BaseException, so no retry loop catches it."""


@pytest.mark.parametrize("point", ["after_commit", "after_fingerprints"])
def test_crash_between_commit_and_ack_loses_and_duplicates_nothing(
    settings: Settings, point: str, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given a consumer that dies after the Postgres commit, before its acknowledgements
    sim = Simulator(SimulationSpec(events=6, bookmakers=("sportybet", "bet9ja"), markets=4, change_rate=0.5))
    published = sim.cycle(TS) + sim.cycle(TS + 1000)
    publisher.publish_cycle(published)
    first = Daemon(settings)
    first.streams.ensure_groups()
    finish = first.streams.finish

    def die(outcome: object) -> None:
        if point == "after_fingerprints":
            client.delete(*keys.all_fingerprints())
            finish.__self__._client.hset(keys.fingerprints(0), "x", b"y")  # a partial write landed
        raise Crash

    first.streams.finish = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        for _ in range(20):
            first.step()
    first.writer.discard()
    assert db.execute("SELECT count(*) FROM snapshots").fetchone() != (0,)
    # When it restarts under the same name and drains (it first re-reads its own pending entries)
    second = Daemon(settings)
    drain(second)
    second.writer.discard()
    # Then the history is exact: nothing lost, nothing written twice
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()


def test_a_batch_abandoned_with_its_lease_drops_the_newer_batch_read_ahead(
    settings: Settings, db: Conn, client: redis.Redis
) -> None:
    # Given one shard holding six changes of one feed, read two at a time, and a consumer whose first
    # commit fails while another consumer takes its lease: it gives up that batch with the next one
    # already read ahead
    settings = settings.with_(shards=1, batch_size=2)
    keys = settings.keys
    published = [one(2.0 + i / 10, TS + i) for i in range(6)]
    Publisher.from_settings(settings).publish_cycle(published)
    first = Daemon(settings)
    first.streams.ensure_groups()
    commit = first.processor.commit

    def fail_once_and_lose_the_lease(batch: consumer.batch.PreparedBatch) -> object:
        first.processor.commit = commit  # type: ignore[method-assign]
        client.set(keys.lease(0), "other")
        raise Transient("postgres: connection lost")

    first.processor.commit = fail_once_and_lose_the_lease  # type: ignore[method-assign]
    for _ in range(20):
        first.step()
        if first.leases.owned == set() and first.prefetched is not None:
            break
    assert first.prefetched is not None
    # When the lease comes back to it and it drains
    client.delete(keys.lease(0))
    first.leases.rebalance(force=True)
    drain(first)
    first.writer.discard()
    # Then the abandoned batch was applied before the one read ahead: no change turned stale
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert count_snapshot_rows(db) == len(published)


BAD_ENTRIES = {
    "missing data": {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": str(TS)},
    "unknown version": {"v": "9", "event": "e", "bookmaker": "bet9ja", "ts": str(TS), "data": b"\x80"},
    "not msgpack": {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": str(TS), "data": "hello"},
    "ts as text": {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": "yesterday", "data": b"\x80"},
    "nan odds": {
        "v": "1",
        "event": "e",
        "bookmaker": "bet9ja",
        "ts": str(TS),
        "data": msgpack.packb(
            {"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": float("nan")}}]}
        ),
    },
    "negative odds": {
        "v": "1",
        "event": "e",
        "bookmaker": "bet9ja",
        "ts": str(TS),
        "data": msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": -2.0}}]}),
    },
    "10 MB": {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": str(TS), "data": b"\x00" * 10_000_000},
    "hand-written": {"hello": "world"},
}


def test_bad_entries_are_dead_lettered_with_a_reason_and_the_batch_is_stored(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given good snapshots and bad entries interleaved in one shard, as redis-cli or a buggy scraper would add
    stream = keys.shard(0)
    good = [one(2.0 + i / 100, TS + i, event=f"good{i}") for i in range(len(BAD_ENTRIES))]
    bad_ids = {}
    for (name, fields), snapshot in zip(BAD_ENTRIES.items(), good):
        bad_ids[client.xadd(stream, fields)] = name  # type: ignore[arg-type]
        publisher.publish(snapshot)
    # When the consumer drains
    drain(daemon)
    # Then every bad entry is dead-lettered once with a reason, and every good one is stored
    letters = dead_letters(client, keys)
    assert sorted(f[b"dead_source_id"] for _, f in letters) == sorted(bad_ids)
    assert all(f[b"dead_reason"] for _, f in letters)
    assert count_snapshot_rows(db) == len(good)


def test_postgres_rejecting_one_entry_dead_letters_only_that_one(
    daemon: Daemon, publisher: Publisher, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given Postgres refuses one market name (a check constraint stands for any data error, class 23)
    db.execute("ALTER TABLE market_series ADD CONSTRAINT test_refuse CHECK (market <> 'Refused')")
    try:
        snapshots = [one(2.0, TS, event=f"e{i}") for i in range(7)]
        snapshots.append(Snapshot("e-refused", "sportybet", TS, (Market("Refused", "", {"1": 2.0}),)))
        publisher.publish_cycle(snapshots)
        # When the consumer drains
        drain(daemon)
    finally:
        db.execute("ALTER TABLE market_series DROP CONSTRAINT test_refuse")
    # Then only the refused entry is dead-lettered, with the SQLSTATE in its reason
    letters = dead_letters(client, keys)
    assert [f[b"event"] for _, f in letters] == [b"e-refused"]
    assert b"23514" in letters[0][1][b"dead_reason"]
    assert count_snapshot_rows(db) == 7


def test_a_transaction_that_misses_the_deadline_is_retried_in_smaller_parts(
    settings: Settings, db: Conn, client: redis.Redis
) -> None:
    # Given Postgres stalling, past the deadline, every statement that writes more than 20 market rows
    db.execute(
        """
        CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF (SELECT count(*) FROM new_rows) > 20 THEN PERFORM pg_sleep(3); END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER test_stall AFTER INSERT ON market_versions REFERENCING NEW TABLE AS new_rows
          FOR EACH STATEMENT EXECUTE FUNCTION test_stall();
        """
    )
    try:
        # And one batch of ten new snapshots of four markets each: 40 market rows in one transaction
        settings = settings.with_(shards=1, db_deadline_s=1.0)
        keys = settings.keys
        sim = Simulator(SimulationSpec(events=10, bookmakers=("sportybet",), markets=4, seed=2))
        published = sim.cycle(TS)
        Publisher.from_settings(settings).publish_cycle(published)
        daemon = Daemon(settings)
        # When a consumer drains it
        with structlog.testing.capture_logs() as logs:
            drain(daemon)
        daemon.writer.discard()
    finally:
        db.execute("DROP TRIGGER test_stall ON market_versions; DROP FUNCTION test_stall()")
    # Then the batch committed in parts small enough to pass, each snapshot once, and the counters agree
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert count_snapshot_rows(db) == stats(client, keys)["changed"] == len(published)
    assert stats(client, keys)["read"] == len(published)
    shrunk = [e for e in logs if e["event"] == "batch_part_shrunk"]
    assert [(e["rows"], e["part_rows"]) for e in shrunk] == [(50, 25)]


def test_a_batch_that_crashes_the_consumer_every_time_dead_letters_only_its_culprit(
    settings: Settings, db: Conn, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 40 good snapshots in one shard, and between them an entry that some bug makes the consumer
    # crash on, until it has been delivered more often than the dead-letter threshold
    settings = settings.with_(shards=1, max_deliveries=10)
    keys = settings.keys
    publisher = Publisher.from_settings(settings)
    good = [one(2.0 + i / 100, TS, event=f"sr:match:{i}") for i in range(40)]
    publisher.publish_cycle(good[:20])
    culprit = client.xadd(keys.shard(0), {k: v for k, v in encode(one(2.0, TS, "sr:match:crash")).items()})
    publisher.publish_cycle(good[20:])
    prepare = BatchProcessor.prepare

    def crash_on_the_culprit(self: BatchProcessor, entries: list[Entry]) -> PreparedBatch:
        if any(e.entry_id == culprit and e.deliveries <= settings.max_deliveries for e in entries):
            raise RuntimeError("a bug this entry triggers")
        return prepare(self, entries)

    monkeypatch.setattr(BatchProcessor, "prepare", crash_on_the_culprit)
    # When the consumer is restarted under its name after each crash, as a supervisor would
    crashes = 0
    while True:
        daemon = Daemon(settings)
        try:
            drain(daemon)
            break
        except RuntimeError:
            crashes += 1
        finally:
            daemon.writer.discard()
    # Then only the culprit is dead-lettered: re-reading fewer entries after each crash let the good ones
    # around it commit before their delivery counts reached the threshold
    letters = dead_letters(client, keys)
    assert [f[b"dead_source_id"] for _, f in letters] == [culprit]
    assert b"delivered 11 times" in letters[0][1][b"dead_reason"]
    assert crashes == settings.max_deliveries
    assert count_snapshot_rows(db) == len(good)
