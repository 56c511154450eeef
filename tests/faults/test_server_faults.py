"""Server faults: Redis restarted with and without persistence, Postgres down, terminated or stalled, Redis
stalled, and a stream cap too small for a stalled consumer.

Each case runs its own Redis and Postgres (tests/faults/harness.py), publishes simulated cycles around the
fault, drains, and compares Postgres with the history one in-order writer would store. Timings (cycle
time, hang, drain) are reported in the row's name and never asserted: this machine's speed is not the
pipeline's correctness.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from shared.wire import Snapshot
from tests.faultkit.proxy import TcpProxy
from tests.faults.harness import FAULT_SETTINGS, ConsumerProcess, FaultRun, Row, RunConfig
from tests.history import content_of, stored_history

pytestmark = pytest.mark.faults

Feed = tuple[str, str]


# -- helpers ---------------------------------------------------------------------------------------------


def split_survivors(run: FaultRun, candidates: int) -> tuple[list[Snapshot], list[int]]:
    """Of the first `candidates` accepted snapshots (those a fault may legitimately destroy), which did
    Postgres see? Returns what to expect and the indices (in run.accepted) of the lost ones. Snapshots
    accepted later must all be stored, so they are expected whole.

    A snapshot survived when a stored run of its feed covers its capture time with its content: had it been
    applied with other content it would have started a row of its own. A lost sighting between two kept
    ones of equal content is indistinguishable from a kept one, and the expected history is the same
    either way. Content is compared as plain sets, as in the checker, never through the fingerprint.
    """
    with run.db() as conn:
        stored = stored_history(conn)
    kept: list[Snapshot] = []
    lost: list[int] = []
    for i, s in enumerate(run.accepted):
        runs = stored.get((s.event, s.bookmaker), [])
        content = content_of(s)
        if i >= candidates or any(
            r.captured_ms <= s.captured_at_ms <= r.last_confirmed_ms and r.content == content for r in runs
        ):
            kept.append(s)
        else:
            lost.append(i)
    return kept, lost


def finish_against_survivors(run: FaultRun, candidates: int | None, label: str) -> tuple[Row, list[int]]:
    """Drain, then compare Postgres with the history of what survived the fault (see split_survivors).

    candidates None: any accepted snapshot may be gone. label is formatted with lost=<count>.
    """
    run.flush_publisher()
    for p in run.live_consumers():
        p.thaw()
    drained, note = run.wait_drained(120.0)
    assert drained, note
    kept, lost = split_survivors(run, len(run.accepted) if candidates is None else candidates)
    run.accepted = kept
    run.fault_name = label.format(lost=len(lost))
    return run.finish(), lost


def publish_for(run: FaultRun, seconds: float, durations: list[float] | None = None) -> None:
    """Publish a cycle every cycle_interval_s for a while, recording each cycle's publish time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        run.publish_cycles(1)
        if durations is not None:
            durations.append(time.monotonic() - started)
        time.sleep(run.config.cycle_interval_s)


def log_events(process: ConsumerProcess) -> list[dict[str, object]]:
    events = []
    for line in process.log_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a traceback or a line cut by SIGKILL
        if isinstance(event, dict):
            events.append(event)
    return events


def ms(durations: list[float]) -> str:
    return f"{statistics.median(durations) * 1000:.1f} ms" if durations else "-"


@contextmanager
def postgres_proxy(run: FaultRun) -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", run.postgres.port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()


# -- Redis restarts --------------------------------------------------------------------------------------


def restart_redis_and_thaw(run: FaultRun) -> None:
    """Kill Redis, start it again from whatever it persisted, and let the frozen consumers go on."""
    run.redis.kill()
    run.redis.start()
    for p in run.live_consumers():
        p.thaw()


def test_redis_killed_and_restarted_with_aof_always_loses_nothing(tmp_path: Path) -> None:
    # Given Redis with appendfsync always, two consumers and a producer publishing cycles
    with FaultRun("Redis SIGKILL + restart, AOF always", tmp_path, RunConfig(appendfsync="always")) as run:
        run.start_consumers()
        publish_for(run, 1.5)
        # When Redis is killed mid-flow and restarted from its AOF, and publishing goes on
        with run.fault("redis SIGKILL, restart from AOF"):
            run.redis.kill()
            publish_for(run, 0.5)  # these wait in the producer's buffer
            run.redis.start()
        publish_for(run, 1.5)
        row = run.finish()
    # Then every snapshot Redis acknowledged is stored exactly once, and nothing is dead-lettered
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


@pytest.mark.slow
def test_redis_killed_and_restarted_with_aof_everysec_loses_at_most_the_last_seconds(tmp_path: Path) -> None:
    # Given Redis with appendfsync everysec, two consumers, and cycles published while they are frozen, so
    # that the kill finds unconsumed entries (the only ones a lost AOF tail can take away)
    config = RunConfig(appendfsync="everysec")
    with FaultRun("Redis SIGKILL + restart, AOF everysec", tmp_path, config) as run:
        run.start_consumers()
        publish_for(run, 1.5)
        for p in run.live_consumers():
            p.freeze()
        accepted_at: dict[int, float] = {}  # index in run.accepted -> when Redis acknowledged it
        for _ in range(10):
            before = len(run.accepted)
            run.publish_cycles(1)
            accepted_at.update(dict.fromkeys(range(before, len(run.accepted)), time.monotonic()))
            time.sleep(run.config.cycle_interval_s)
        # When Redis is killed and restarted from its AOF
        with run.fault("redis SIGKILL, restart from everysec AOF"):
            killed_at, candidates = time.monotonic(), len(run.accepted)
            restart_redis_and_thaw(run)
        # And the next cycles are published
        publish_for(run, 2.0)
        row, lost = finish_against_survivors(
            run, candidates, "Redis SIGKILL + restart, AOF everysec ({lost} entries lost to the restart)"
        )
    # Then only entries acknowledged within the last 2 s before the kill can be missing (everysec fsyncs
    # each second, and Redis lets a slow fsync lag one more second before it blocks writes); the history
    # of what survived is exact, and every cycle published after the restart is stored: it converges
    print(f"everysec: {len(lost)} of {candidates} entries acknowledged before the kill were lost")
    too_old = [i for i in lost if accepted_at.get(i, float("-inf")) < killed_at - 2.0]
    assert not too_old, f"{len(too_old)} lost entries were acknowledged more than 2 s before the kill"
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


def test_redis_restarted_without_persistence_recreates_its_group_without_duplicates(tmp_path: Path) -> None:
    # Given Redis without persistence, two consumers, and a backlog they have not read (they are frozen)
    with FaultRun("Redis restarted, no persistence", tmp_path, RunConfig(appendfsync=None)) as run:
        run.start_consumers()
        publish_for(run, 1.5)
        for p in run.live_consumers():
            p.freeze()
        publish_for(run, 0.5)
        # When Redis restarts empty: stream, group, leases and fingerprints are gone
        with run.fault("redis restart without persistence"):
            candidates = len(run.accepted)
            restart_redis_and_thaw(run)
        # And cycles go on being published
        publish_for(run, 2.0)
        row, lost = finish_against_survivors(
            run, candidates, "Redis restarted, no persistence ({lost} unconsumed entries lost to the restart)"
        )
        groups = [run.client.xinfo_groups(run.keys.shard(n)) for n in range(run.keys.shards)]
    # Then the consumers recreated their group on every shard, every cycle published after the restart is
    # stored, and what survived the restart is stored without a duplicate or a stale row
    print(f"no persistence: {len(lost)} of {candidates} entries were lost to the restart")
    assert all(g and g[0]["name"] == run.keys.group.encode() for g in groups), groups
    assert lost, "the frozen consumers left a backlog, so the restart must have taken some entries"
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


# -- Postgres down, terminated, stalled ------------------------------------------------------------------


@pytest.mark.parametrize(
    "down_s", [pytest.param(5.0, id="5s"), pytest.param(30.0, id="30s", marks=pytest.mark.slow)]
)
def test_postgres_down_keeps_the_producer_going_and_drains_afterwards(tmp_path: Path, down_s: float) -> None:
    # Given two consumers and a producer timing each cycle's publish
    with FaultRun(f"Postgres down {down_s:g} s", tmp_path) as run:
        run.start_consumers()
        before: list[float] = []
        during: list[float] = []
        after: list[float] = []
        publish_for(run, 1.5, before)
        # When Postgres is stopped for down_s while cycles keep coming
        with run.fault(f"postgres down {down_s:g} s") as record:
            run.postgres.stop()
            publish_for(run, down_s, during)
            run.postgres.start()
        publish_for(run, 1.5, after)
        row = run.finish()
    # Then nothing is lost or dead-lettered, and the backlog drains (its drain time is the recovery)
    row.fault = (
        f"Postgres down {down_s:g} s (cycle publish median {ms(before)} before, {ms(during)} during, "
        f"{ms(after)} after; backlog drained {record.describe()} after restart)"
    )
    abandoned = [
        e for p in run.processes for e in log_events(p) if e.get("event") == "batch_abandoned_lease_lost"
    ]
    print(row.fault)
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()
    # And the consumers kept their shards while they waited: a lease lost to a Postgres outage hands the
    # batch over and raises its delivery count, which a longer outage would turn into dead letters
    assert not abandoned, abandoned[:3]


def test_pg_terminate_backend_repeatedly_is_transient(tmp_path: Path) -> None:
    # Given two consumers; and a trigger that terminates the backend at the COMMIT of the first new feeds,
    # where the client cannot know whether its rows were kept
    with FaultRun("pg_terminate_backend, repeatedly and at COMMIT", tmp_path) as run:
        with run.db() as conn:
            conn.execute(
                """
                CREATE SEQUENCE fault_kills;
                CREATE FUNCTION fault_kill_once() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF nextval('fault_kills') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
                  RETURN NULL;
                END $$;
                CREATE CONSTRAINT TRIGGER fault_kill_at_commit AFTER INSERT ON feeds
                  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_kill_once();
                """
            )
        run.start_consumers()
        terminated = 0
        stop = threading.Event()

        def terminate_loop() -> None:
            nonlocal terminated
            with run.db() as conn:
                while not stop.wait(0.3):
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name LIKE 'odds-%'"
                    ).fetchone()
                    terminated += int(str(row[0])) if row else 0

        # When the consumers' backends are terminated every 0.3 s while cycles are published
        killer = threading.Thread(target=terminate_loop, daemon=True)
        with run.fault("pg_terminate_backend every 0.3 s"):
            killer.start()
            try:
                publish_for(run, 6.0)
            finally:
                stop.set()
                killer.join(10)
        publish_for(run, 1.0)
        row = run.finish()
        with run.db() as conn:
            at_commit = conn.execute("SELECT last_value FROM fault_kills").fetchone()
    row.fault = f"pg_terminate_backend x{terminated} every 0.3 s, and once at COMMIT"
    print(row.fault)
    # Then every termination was retried: nothing lost, nothing dead-lettered
    assert terminated > 0 and at_commit is not None and int(str(at_commit[0])) >= 1
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


def test_postgres_connection_black_holed_trips_the_client_deadline(tmp_path: Path) -> None:
    # Given one consumer whose Postgres connection runs through a proxy
    with FaultRun("Postgres connection black-holed", tmp_path, RunConfig(consumers=1)) as run:
        with postgres_proxy(run) as proxy:
            url = f"postgresql://postgres@127.0.0.1:{proxy.port}/odds"
            consumer = run.start_consumer("c0", env={"DATABASE_URL": url})
            publish_for(run, 1.5)
            # When the proxy silently drops every byte for 4 s while batches are being written
            with run.fault("postgres black hole 4 s"):
                holed_at = time.time()
                proxy.blackhole()
                publish_for(run, 4.0)
                proxy.heal()
            publish_for(run, 1.5)
            row = run.finish()
    deadline_s = run.settings.db_deadline_s
    retries = [
        e
        for e in log_events(consumer)
        if e.get("event") == "batch_retrying" and "deadline" in str(e.get("error"))
    ]
    first = min((_epoch(str(e["timestamp"])) for e in retries), default=None)
    hang = f"{first - holed_at:.1f} s" if first is not None else "-"
    row.fault = (
        f"Postgres connection black-holed 4 s (deadline {deadline_s:g} s; first call failed after {hang})"
    )
    print(row.fault)
    # Then the deadline fired (the consumer logged a retry naming it), the connection was replaced, and
    # nothing was lost, duplicated or dead-lettered
    assert retries, f"no deadline retry in {consumer.log_path}"
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# -- Redis stalled ---------------------------------------------------------------------------------------


def test_redis_stalled_5s_the_producer_catches_up_and_retried_xadds_add_no_rows(tmp_path: Path) -> None:
    # Given a producer and two consumers that all reach Redis through a proxy
    with FaultRun("Redis stalled 5 s (proxy pause)", tmp_path) as run:
        proxy = run.proxy()
        url = run.proxied_url(proxy)
        for i in range(run.config.consumers):
            run.start_consumer(f"c{i}", redis_url=url)
        buffered: list[int] = []

        def publish(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                run.publish_cycles(1, redis_url=url)
                buffered.append(run._publisher.buffered if run._publisher else 0)
                time.sleep(run.config.cycle_interval_s)

        publish(1.5)
        # When the proxy holds every byte both ways for 5 s: requests sent meanwhile arrive late, after
        # their client has timed out and retried them
        with run.fault("redis paused 5 s"):
            proxy.pause()
            publish(5.0)
            proxy.resume()
        publish(2.0)
        row = run.finish()
    row.fault = f"Redis stalled 5 s (producer buffered up to {max(buffered)} entries, then caught up)"
    print(row.fault, row.counters)
    # Then the producer buffered and caught up, and the XADDs repeated by its retries added no rows
    assert max(buffered) > 0
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


def test_a_read_that_timed_out_in_a_short_redis_stall_is_not_left_pending(tmp_path: Path) -> None:
    # Given two consumers reaching Redis through a proxy, a producer writing straight to Redis, and a stall
    # shorter than the lease: the consumers keep their shards, so nothing else would re-read their history
    config = RunConfig(settings=FAULT_SETTINGS.with_(redis_timeout_s=0.5))
    with FaultRun("Redis stalled 1.5 s for the consumers only", tmp_path, config) as run:
        proxy = run.proxy()
        for i in range(run.config.consumers):
            run.start_consumer(f"c{i}", redis_url=run.proxied_url(proxy))
        publish_for(run, 1.5)
        # When the proxy holds the consumers' reads while entries keep arriving: a read sent before the
        # stall runs after it, and moves entries into a pending list whose client has already given up
        for _ in range(3):
            with run.fault("consumers' redis paused 1.5 s"):
                proxy.pause()
                publish_for(run, 1.5)
                proxy.resume()
            publish_for(run, 0.5)
        row = run.finish(drain_timeout_s=30.0)
    # Then the consumers re-read their own pending entries: everything is stored, nothing is left pending
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


# -- stream cap ------------------------------------------------------------------------------------------


def test_tiny_stream_cap_with_a_stalled_consumer_counts_what_it_forces_out(tmp_path: Path) -> None:
    # Given a hard cap of 30 entries per shard, far below what piles up behind a frozen consumer
    cap = 30
    with FaultRun("tiny stream cap, stalled consumer", tmp_path, RunConfig(consumers=1)) as run:
        # The producer enforces the cap too (it is off by default): the consumer is frozen, so only the
        # producer can trim meanwhile
        run.settings = run.settings.with_(stream_hard_cap=cap, producer_hard_cap=True)
        consumer = run.start_consumer("c0", env={"ODDS_STREAM_HARD_CAP": str(cap)})
        publish_for(run, 1.5)
        # When the consumer stalls while the producer publishes cycles, each one near the cap on its own
        with structlog.testing.capture_logs() as producer_logs:
            with run.fault("consumer frozen, cap exceeded"):
                consumer.freeze()
                publish_for(run, 2.0)
                consumer.thaw()
            publish_for(run, 0.5)
        row, lost = finish_against_survivors(
            run, None, f"tiny cap ({cap}/shard), stalled consumer: {{lost}} entries forced out, counted"
        )
    forced = row.counters.get("forced_trimmed", 0)
    logged = [e for e in producer_logs if e["event"] == "stream_hard_cap_deleted_unacknowledged_entries"]
    logged += [
        e
        for e in log_events(consumer)
        if e.get("event") in ("stream_hard_cap_deleted_unacknowledged_entries", "entry_trimmed_while_pending")
    ]
    print(f"cap {cap}: {len(lost)} entries forced out, forced_trimmed={forced}, {len(logged)} log events")
    # Then entries were forced out, but every one of them is counted in forced_trimmed and logged, never
    # silently gone; what was kept is stored exactly
    assert lost, "the cap was far too small for the backlog: entries must have been forced out"
    assert forced >= len(lost), (len(lost), row.counters)
    assert logged, "the forced trim must be logged by the producer or the consumer"
    assert row.passed, row.details()
