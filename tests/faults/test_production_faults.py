"""Faults of a production deployment: rolling restarts with many bookmakers, snapshots of thousands of
markets, a retention job deleting feeds under a running pipeline, and Redis dropping connections between
the commit and the bookkeeping.

Each case runs real consumer processes against private servers (tests/faults/harness.py), drains, and
compares Postgres with the history one in-order writer would store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import cast

import psycopg
import pytest

from producer.simulator import SimulationSpec
from shared.settings import Settings
from tests.bench.measures import vm_hwm_kb
from tests.faults.harness import FAULT_SETTINGS, TS0, FaultRun, RunConfig, processed_once
from tests.faults.processes import ConsumerProcess
from tests.large_snapshots import LargeBook

pytestmark = pytest.mark.faults

Conn = psycopg.Connection[tuple[object, ...]]
Feed = tuple[str, str]


def committed_batches(process: ConsumerProcess) -> list[dict[str, object]]:
    batches = []
    for line in process.log_text().splitlines():
        if '"batch_committed"' in line:
            batches.append(json.loads(line))
    return batches


# -- ids: sequences must not burn -------------------------------------------------------------------------


def id_use(conn: Conn) -> dict[str, tuple[int, int]]:
    """Per id sequence of the schema: (rows in its table, values it has handed out)."""
    use = {}
    for table in ("bookmakers", "events", "feeds"):
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM {table}),"
            f" (SELECT coalesce(last_value, 0) FROM pg_sequences WHERE sequencename = '{table}_id_seq')"
        ).fetchone()
        assert row is not None
        use[table] = (int(str(row[0])), int(str(row[1])))
    return use


def test_rolling_restarts_with_many_bookmakers_use_ids_in_proportion_to_rows(tmp_path: Path) -> None:
    # Given 30 bookmakers (120 feeds) and two consumers, each restart of which starts with no feed id cached
    bookmakers = tuple(f"book-{i:02d}" for i in range(30))
    spec = SimulationSpec(events=4, bookmakers=bookmakers, markets=4, change_rate=0.3, seed=5)
    config = RunConfig(consumers=2, spec=spec, cycle_interval_s=0.2)
    restarts = 10
    with FaultRun("rolling restarts, 30 bookmakers", tmp_path, config) as run:
        run.start_consumers()
        with run.publishing():
            # When the consumers are restarted one after the other, again and again (rolling deploys)
            for i in range(restarts):
                time.sleep(0.6)
                name = f"c{i % 2}"
                with run.fault(f"restart {name}"):
                    assert run.consumer(name).terminate() == 0
                    run.start_consumer(name)
            time.sleep(1.0)
        row = run.finish()
        with run.db() as conn:
            use = id_use(conn)
    figures = ", ".join(f"{table} {used} ids for {rows} rows" for table, (rows, used) in use.items())
    row.fault = f"rolling restarts {restarts}x, 30 bookmakers ({figures})"
    print(row.fault)
    # Then nothing is lost or dead-lettered, and every id sequence handed out about one value per row: at
    # most one per consumer that raced to insert the same new row, never one per batch
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()
    for table, (rows, used) in use.items():
        assert rows > 0 and used <= config.consumers * rows, (table, rows, used)


# -- snapshots of 5,000 markets ---------------------------------------------------------------------------


def longest_call_ms(run: FaultRun) -> float:
    """The longest command in the Redis slow log (kept from 1 ms up), in ms."""
    entries = cast(list[dict[str, object]], run.client.slowlog_get(128))
    return max((int(str(e["duration"])) for e in entries), default=0) / 1000


def test_snapshots_of_5000_markets_commit_in_bounded_batches(tmp_path: Path) -> None:
    # Given 12 feeds of 5,000 markets each (about 420 kB an entry, under the entry limit) and 6 cycles of
    # them waiting in the stream: 360,000 market rows, more than one transaction can write within the
    # database deadline (0.5 s here, a slow database's 10 s in production)
    config = RunConfig(consumers=1, settings=FAULT_SETTINGS.with_(batch_size=1000, db_deadline_s=0.5))
    book = LargeBook(events=4, bookmakers=("sportybet", "bet9ja", "betking"))
    with FaultRun("5,000-market snapshots", tmp_path, config) as run:
        run.client.config_set("slowlog-log-slower-than", 1000)
        for c in range(6):
            run.publish_snapshots(book.cycle(TS0 + c * 1000))
        run.client.slowlog_reset()
        # When one consumer with the default byte and row limits works through them
        consumer = run.start_consumer("c0")
        drained, note = run.wait_drained(120.0)
        peak_mb = vm_hwm_kb(consumer.pid) / 1024 if consumer.alive() else 0.0
        longest_ms = longest_call_ms(run)
        row = run.finish()
        batches = committed_batches(consumer)
    largest = max((int(str(b.get("bytes", 0))) for b in batches), default=0)
    row.fault = (
        f"5,000-market snapshots, {len(run.accepted)} of 420 kB ({len(batches)} batches, largest "
        f"{largest / 2**20:.1f} MiB; longest Redis call {longest_ms:.0f} ms; consumer peak RSS "
        f"{peak_mb:.0f} MB)"
    )
    print(row.fault)
    # Then everything is stored exactly, nothing is dead-lettered, and no read took more than the byte
    # limit (plus the one entry that crossed it) into the consumer's memory
    limits = Settings()
    assert drained, note
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()
    assert 0 < largest <= limits.batch_max_bytes + limits.max_entry_bytes, largest


# -- a retention job deletes feeds -------------------------------------------------------------------------


def retention_delete(run: FaultRun, feeds: list[Feed]) -> dict[Feed, int]:
    """Delete the feeds' rows, as a retention job would; per feed, the newest capture time it deleted.

    The feed rows are locked first, as the consumers lock them, so the job waits for a batch writing them
    instead of deadlocking with it.
    """
    events, bookmakers = [f[0] for f in feeds], [f[1] for f in feeds]
    with run.db() as conn, conn.transaction():
        ids = [
            int(str(r[0]))
            for r in conn.execute(
                "SELECT f.id FROM feeds f JOIN events e ON e.id = f.event_id"
                " JOIN bookmakers b ON b.id = f.bookmaker_id"
                " JOIN unnest(%s::text[], %s::text[]) AS k(event, bookmaker)"
                " ON k.event = e.external_id AND k.bookmaker = b.slug FOR UPDATE OF f",
                (events, bookmakers),
            ).fetchall()
        ]
        deleted = conn.execute(
            "DELETE FROM snapshots s USING feeds f, events e, bookmakers b"
            " WHERE s.feed_id = f.id AND f.event_id = e.id AND f.bookmaker_id = b.id AND f.id = ANY(%s)"
            " RETURNING s.id, e.external_id, b.slug,"
            " (extract(epoch FROM s.last_confirmed_at) * 1000)::bigint",
            (ids,),
        ).fetchall()
        conn.execute(
            "DELETE FROM market_versions v USING market_series ms WHERE v.series_id = ms.id"
            " AND ms.feed_id = ANY(%s)",
            (ids,),
        )
        conn.execute("DELETE FROM market_series WHERE feed_id = ANY(%s)", (ids,))
        conn.execute("DELETE FROM feeds WHERE id = ANY(%s)", (ids,))
    newest: dict[Feed, int] = {}
    for _, event, bookmaker, last_ms in deleted:
        feed = (str(event), str(bookmaker))
        newest[feed] = max(newest.get(feed, 0), int(str(last_ms)))
    return newest


def test_a_retention_job_deleting_feeds_under_a_running_pipeline_dead_letters_nothing(tmp_path: Path) -> None:
    # Given two consumers writing while cycles are published
    with FaultRun("retention job deletes feeds while publishing", tmp_path, RunConfig(consumers=2)) as run:
        run.start_consumers()
        cut: dict[Feed, int] = {}
        with run.publishing():
            time.sleep(1.5)
            # When a retention job deletes six feeds' snapshots, markets and feed rows, three times, while
            # the consumers hold those feeds' ids in their caches and the feeds keep being published
            for i in range(3):
                victims = sorted({(s.event, s.bookmaker) for s in run.accepted})[i : i + 6]
                with run.fault(f"retention DELETE of {len(victims)} feeds"):
                    cut.update(retention_delete(run, victims))
                time.sleep(1.0)
        # Then (what the job deleted is gone, and the in-order history of the rest is expected)
        # (in place: the producer records what Redis accepts into this very list)
        run.accepted[:] = [s for s in run.accepted if s.captured_at_ms > cut.get((s.event, s.bookmaker), 0)]
        row = run.finish()
    row.fault = f"retention job deletes {len(cut)} feeds 3x while publishing"
    print(row.fault)
    # Every snapshot published after a deletion is stored, and nothing is dead-lettered for the deleted ids
    assert cut, "the retention job deleted nothing: the case tested nothing"
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


# -- Redis drops the connection between the commit and the bookkeeping ---------------------------------


def test_counters_agree_with_postgres_when_redis_drops_after_the_commit(tmp_path: Path) -> None:
    # Given two consumers whose Redis connection drops on every third batch, after its Postgres commit
    with FaultRun("Redis connection dropped after the commit", tmp_path, RunConfig(consumers=2)) as run:
        for name in ("c0", "c1"):
            run.start_consumer(name, module="tests.faults.flaky_redis_consumer")
        # When cycles are published and drained
        with run.fault("redis dropped after every third commit"):
            with run.publishing():
                time.sleep(5.0)
        row = run.finish()
        retries = sum(
            p.log_text().count("Connection closed by server (dropped by the fault wrapper)")
            for p in run.processes
        )
    row.fault = f"Redis connection dropped after the commit {retries}x"
    print(row.fault, row.counters)
    # Then the counters agree with Postgres: changed equals the snapshot rows, and every entry is counted
    # once, none of them as a duplicate of itself
    assert retries > 0, "no connection was dropped: the case tested nothing"
    assert row.passed, row.details()
    assert row.counters.get("changed", 0) == row.rows, row.details()
    assert processed_once(row) == row.published, row.details()
    assert row.counters.get("duplicate", 0) == 0, row.details()
