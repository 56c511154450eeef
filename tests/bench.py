"""`python -m tests.bench [--quick] [--backlog N]`: pipeline performance against real Redis and Postgres.

Consumers run as real processes, as in production. Throughput is timed on a pre-filled backlog: the
consumers are started and warmed up first (leases spread, opening lines written), then paused with SIGSTOP
while the backlog is published, and timed from SIGCONT until every entry is committed and acknowledged.
Everything lives under a unique stream prefix and a bench database, both removed at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from producer.publisher import PIPELINE_CHUNK, Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.db import psycopg_url, with_database
from shared.keys import Keys, shard_of
from shared.redis_client import connect
from shared.trim import stream_id
from shared.wire import Snapshot, encode, market_row

BOOKMAKERS = ("alpha", "bravo", "charlie")
MARKETS = 40
RATES = (0.0, 0.2, 1.0)
SEED = 7
SHARDS = 4
GROUP = "odds-writers"
POLL_S = 0.01
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Size:
    events: int
    backlog_cycles: int  # cycles per timed backlog, after the warm-up cycle
    latency_s: float
    rss_backlog: int


@dataclass
class RunResult:
    rate: float
    consumers: int
    snapshots: int
    seconds: float
    expected_changes: int
    stats: dict[str, int]
    snapshot_rows: int
    market_rows: int
    updated_rows: int
    hot_updates: int
    table_bytes: int
    yardstick_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.snapshots / self.seconds


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def row(self, what: str, value: str, note: str = "") -> None:
        self.lines.append(f"| {what} | {value} | {note} |")


def ms_now() -> int:
    return int(time.time() * 1000)


class Bench:
    def __init__(self, redis_url: str, database_url: str, size: Size) -> None:
        self.size = size
        self.redis_url = redis_url
        self.admin_url = psycopg_url(database_url)
        self.db_name = f"odds_bench_{os.getpid()}"
        self.db_url = with_database(self.admin_url, self.db_name)
        self.prefix = f"bench:{os.getpid()}"
        self.client = connect(redis_url, 30.0)
        self.tmp = Path(tempfile.mkdtemp(prefix="odds-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.streams_used: list[str] = []
        self.clock_ms = ms_now() - 3_600_000  # capture times: an hour back, one second per cycle

    # --- setup and teardown -------------------------------------------------------------------------

    def setup(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        subprocess.run(
            [sys.executable, "-m", "consumer", "migrate", "--log-level", "WARNING"],
            env=self.env("unused"),
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
        for prefix in self.streams_used:
            keys = list(self.client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                self.client.delete(*keys[i : i + 500])
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def env(self, stream: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "DATABASE_URL": self.db_url,
                "ODDS_STREAM": stream,
                "ODDS_SHARDS": str(SHARDS),
                "ODDS_GROUP": GROUP,
                # A short lease lets two consumers settle on two shards each within a second or two.
                "ODDS_CLAIM_IDLE_MS": "5000",
                "ODDS_DB_DEADLINE_S": "4",
                # Trimming would delete the backlog that the yardstick reads again afterwards.
                "ODDS_TRIM_INTERVAL_S": "3600",
            }
        )
        env.update(extra)
        return env

    def new_stream(self, name: str) -> tuple[str, Keys]:
        stream = f"{self.prefix}:{name}"
        self.streams_used.append(stream)
        return stream, Keys(stream, GROUP, SHARDS)

    def simulator(self, rate: float, events: int | None = None) -> Simulator:
        return Simulator(
            SimulationSpec(
                events=events or self.size.events,
                bookmakers=BOOKMAKERS,
                markets=MARKETS,
                change_rate=rate,
                seed=SEED,
            )
        )

    def next_ts(self) -> int:
        self.clock_ms += 1000
        return self.clock_ms

    def reset_database(self) -> None:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("TRUNCATE markets, snapshots, feeds, events, bookmakers RESTART IDENTITY")

    # --- consumers ----------------------------------------------------------------------------------

    def start_consumers(self, stream: str, count: int, **extra: str) -> list[subprocess.Popen[bytes]]:
        procs = []
        for i in range(count):
            log = (self.tmp / f"{stream.replace(':', '_')}-{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "consumer", "run", "--name", f"bench-{i}", "--log-json"],
                    env=self.env(stream, **extra),
                    cwd=ROOT,
                    stdout=log,
                    stderr=log,
                )
            )
        self.procs += procs
        return procs

    def wait_leases(self, keys: Keys, count: int, timeout_s: float = 30.0) -> None:
        """Until the shards are spread evenly: each of `count` consumers holds its fair share."""
        deadline = time.monotonic() + timeout_s
        fair = -(-SHARDS // count)
        while time.monotonic() < deadline:
            holders = self.client.mget([keys.lease(n) for n in range(SHARDS)])
            owners = [h for h in holders if h is not None]
            if (
                len(owners) == SHARDS
                and len(set(owners)) == count
                and all(owners.count(o) <= fair for o in set(owners))
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"consumers did not spread the leases of {keys.stream} in {timeout_s:g} s")

    def stop(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)

    def stats(self, keys: Keys) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall(keys.stats)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def pending(self, keys: Keys) -> int:
        pipe = self.client.pipeline(transaction=False)
        for stream in keys.all_shards():
            pipe.xpending(stream, GROUP)
        return sum(int(r["pending"]) for r in pipe.execute())

    def wait_drained(
        self, keys: Keys, total_read: int, timeout_s: float = 3600.0, tick: Callable[[], None] | None = None
    ) -> float:
        """Until the consumers have read `total_read` entries in all and none is pending; returns the time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats(keys).get("read", 0) >= total_read and self.pending(keys) == 0:
                return time.perf_counter()
            if tick is not None:
                tick()
            time.sleep(POLL_S)
        raise RuntimeError(f"{keys.stream} not drained in {timeout_s:g} s: {self.stats(keys)}")

    # --- measurements -------------------------------------------------------------------------------

    def publish_rates(self) -> tuple[float, float]:
        """Publisher.publish_cycle (encode + pipelined XADD) against raw pipelined XADD of the same bytes."""
        sim = self.simulator(0.2)
        _, keys = self.new_stream("publish")
        publisher = Publisher(self.client, keys)
        cycles = [sim.cycle(self.next_ts()) for _ in range(3)]
        published = []
        for snapshots in cycles:
            start = time.perf_counter()
            publisher.publish_cycle(snapshots)
            published.append(len(snapshots) / (time.perf_counter() - start))
        raw = []
        for snapshots in cycles:
            entries = [(keys.shard(shard_of(s.event, s.bookmaker, SHARDS)), encode(s)) for s in snapshots]
            start = time.perf_counter()
            for i in range(0, len(entries), PIPELINE_CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for stream, fields in entries[i : i + PIPELINE_CHUNK]:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                pipe.execute()
            raw.append(len(entries) / (time.perf_counter() - start))
        return statistics.median(published), statistics.median(raw)

    def producer_under_stall(self) -> tuple[float, float]:
        """Median publish_cycle time with a consumer working, and with it stopped and Postgres locked."""
        self.reset_database()
        stream, keys = self.new_stream("stall")
        procs = self.start_consumers(stream, 1)
        self.wait_leases(keys, 1)
        sim = self.simulator(0.2)
        publisher = Publisher(self.client, keys)

        def cycle_s() -> float:
            snapshots = sim.cycle(self.next_ts())
            start = time.perf_counter()
            publisher.publish_cycle(snapshots)
            return time.perf_counter() - start

        normal = [cycle_s() for _ in range(3)]
        for proc in procs:
            proc.send_signal(signal.SIGSTOP)
        with psycopg.connect(self.db_url) as lock:
            lock.execute("LOCK TABLE feeds, snapshots, markets IN ACCESS EXCLUSIVE MODE")
            stalled = [cycle_s() for _ in range(3)]
            lock.rollback()
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
        self.wait_drained(keys, 6 * len(sim.spec.bookmakers) * sim.spec.events)
        self.stop(procs)
        return statistics.median(normal), statistics.median(stalled)

    def feed_updates(self) -> int:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            row = conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'feeds'").fetchone()
        return int(row[0]) if row else 0

    def wait_stats_flushed(self, feed_updates: int, timeout_s: float = 15.0) -> None:
        """Until the warm-up's feed updates show in pg_stat_user_tables: a busy backend reports them late."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.feed_updates() < feed_updates:
            time.sleep(0.1)

    def table_state(self) -> tuple[int, int, int, int, int]:
        """Snapshot rows, market rows, updated rows (snapshots and feeds), HOT updates, table bytes."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            snaps, mkts = conn.execute(
                "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM markets)"
            ).fetchone() or (0, 0)
            upd, hot = conn.execute(
                "SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) "
                "FROM pg_stat_user_tables WHERE relname IN ('snapshots', 'feeds')"
            ).fetchone() or (0, 0)
            size = conn.execute(
                "SELECT pg_total_relation_size('snapshots') + pg_total_relation_size('markets')"
            ).fetchone()
        return int(snaps), int(mkts), int(upd), int(hot), int(size[0] if size else 0)

    def throughput(self, rate: float, consumers: int) -> RunResult:
        self.reset_database()
        stream, keys = self.new_stream(f"tp-{rate:g}-{consumers}")
        sim = self.simulator(rate)
        warm = sim.cycle(self.next_ts())
        backlog = [sim.cycle(self.next_ts()) for _ in range(self.size.backlog_cycles)]
        expected = count_changes(warm, backlog)
        procs = self.start_consumers(stream, consumers)
        self.wait_leases(keys, consumers)
        publisher = Publisher(self.client, keys)
        feed_updates = self.feed_updates()
        publisher.publish_cycle(warm)
        self.wait_drained(keys, len(warm))
        self.wait_stats_flushed(feed_updates + len(warm))
        before = self.table_state()
        stats_before = self.stats(keys)
        for proc in procs:
            proc.send_signal(signal.SIGSTOP)
        total = 0
        for snapshots in backlog:
            publisher.publish_cycle(snapshots)
            total += len(snapshots)
        read_before = self.stats(keys).get("read", 0)
        start = time.perf_counter()
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
        end = self.wait_drained(keys, read_before + total)
        stats = {k: v - stats_before.get(k, 0) for k, v in self.stats(keys).items()}
        self.stop(procs)  # first, so the backends flush their statistics as they exit
        time.sleep(0.5)
        after = self.table_state()
        run = RunResult(
            rate,
            consumers,
            total,
            end - start,
            expected,
            stats,
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2],
            after[3] - before[3],
            after[4] - before[4],
        )
        if consumers == 1:
            run.yardstick_s = self.yardstick(keys, warm, backlog)
        return run

    def yardstick(self, keys: Keys, warm: list[Snapshot], backlog: list[list[Snapshot]]) -> float:
        """The bare minimum on the same data: XREADGROUP + XACK of every entry, binary COPY of the changed
        snapshots' rows, and one UPDATE for the unchanged ones, all without any checking or planning."""
        for stream in keys.all_shards():
            self.client.xgroup_create(stream, "yardstick", id="$")
        # Re-add the backlog's entries under the yardstick group (untimed): the same bytes, read once.
        publisher = Publisher(self.client, keys)
        for snapshots in backlog:
            publisher.publish_cycle(snapshots)
        feeds = {(s.event, s.bookmaker): i + 1 for i, s in enumerate(warm)}
        changed: list[tuple[int, int, Snapshot]] = []
        unchanged: dict[int, int] = {}
        current = {(s.event, s.bookmaker): s.markets for s in warm}
        for snapshots in backlog:
            for s in snapshots:
                key = (s.event, s.bookmaker)
                if s.markets != current[key]:
                    changed.append((feeds[key], len(feeds) + len(changed) + 1, s))
                    current[key] = s.markets
                else:
                    unchanged[feeds[key]] = s.captured_at_ms
        snapshot_rows = [
            (sid, fid, to_dt(s.captured_at_ms), to_dt(s.captured_at_ms), b"x" * 16) for fid, sid, s in changed
        ]
        market_rows = [
            (sid, r.market, r.specifier, list(r.outcomes), list(r.odds))
            for _, sid, s in changed
            for r in map(market_row, s.markets)
        ]
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS y_snapshots, y_markets")
            conn.execute("CREATE TABLE y_snapshots (LIKE snapshots INCLUDING ALL) WITH (fillfactor = 80)")
            conn.execute("CREATE TABLE y_markets (LIKE markets INCLUDING ALL)")
            with conn.cursor().copy(
                "COPY y_snapshots (id, feed_id, captured_at, last_confirmed_at, fingerprint) FROM STDIN"
            ) as copy:
                for s in warm:
                    ts = to_dt(s.captured_at_ms)
                    copy.write_row(
                        (feeds[(s.event, s.bookmaker)], feeds[(s.event, s.bookmaker)], ts, ts, b"x")
                    )
            conn.execute("VACUUM ANALYZE y_snapshots")
            start = time.perf_counter()
            streams: dict[Any, Any] = {stream: ">" for stream in keys.all_shards()}
            while True:
                reply: list[Any] = self.client.xreadgroup(  # type: ignore[assignment]
                    "yardstick",
                    "y",
                    streams,
                    count=500,
                )
                if not reply:
                    break
                pipe = self.client.pipeline(transaction=False)
                for stream_reply in reply:
                    name, entries = stream_reply[0], stream_reply[1]
                    pipe.xack(name, "yardstick", *(entry[0] for entry in entries))
                pipe.execute()
            with conn.transaction():
                with conn.cursor().copy(
                    "COPY y_snapshots (id, feed_id, captured_at, last_confirmed_at, "
                    "fingerprint) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "int8", "timestamptz", "timestamptz", "bytea"])
                    for row in snapshot_rows:
                        copy.write_row(row)
                with conn.cursor().copy(
                    "COPY y_markets (snapshot_id, market, specifier, outcomes, odds) "
                    "FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "text", "text", "text[]", "float8[]"])
                    for mrow in market_rows:
                        copy.write_row(mrow)
                conn.execute(
                    "UPDATE y_snapshots s SET last_confirmed_at = v.ts FROM unnest(%s::bigint[], "
                    "%s::timestamptz[]) AS v(id, ts) WHERE s.id = v.id",
                    (list(unchanged), [to_dt(t) for t in unchanged.values()]),
                )
            elapsed = time.perf_counter() - start
            conn.execute("DROP TABLE y_snapshots, y_markets")
        return elapsed

    def latency(self, target_per_s: float) -> tuple[float, float, int]:
        """Publish at a steady rate and time each entry from its XADD (its id) until it is acknowledged.

        An entry is acknowledged once it lies below the group's oldest pending entry and at or below its
        last-delivered id; the XACK follows the commit by one Redis round trip.
        """
        self.reset_database()
        stream, keys = self.new_stream("latency")
        sim = self.simulator(0.2)
        procs = self.start_consumers(stream, 1)
        self.wait_leases(keys, 1)
        publisher = Publisher(self.client, keys)
        warm = sim.cycle(self.next_ts())
        publisher.publish_cycle(warm)
        self.wait_drained(keys, len(warm))
        needed = int(target_per_s * self.size.latency_s) + 1
        queue: list[Snapshot] = []
        while len(queue) < needed:
            queue += sim.cycle(self.next_ts())
        outstanding: dict[str, list[tuple[int, int]]] = {s: [] for s in keys.all_shards()}
        latencies: list[int] = []
        sent, start = 0, time.perf_counter()
        read_before = self.stats(keys).get("read", 0)
        while sent < needed:
            due = min(needed, int((time.perf_counter() - start) * target_per_s))
            if due > sent:
                pipe = self.client.pipeline(transaction=False)
                chunk = queue[sent:due]
                targets = [keys.shard(shard_of(s.event, s.bookmaker, SHARDS)) for s in chunk]
                for target, s in zip(targets, chunk):
                    pipe.xadd(target, encode(s))  # type: ignore[arg-type]
                for target, entry_id in zip(targets, pipe.execute()):
                    outstanding[target].append(stream_id(entry_id))
                sent = due
            self._collect_acked(keys, outstanding, latencies)
            time.sleep(POLL_S)
        self.wait_drained(
            keys, read_before + needed, tick=lambda: self._collect_acked(keys, outstanding, latencies)
        )
        self._collect_acked(keys, outstanding, latencies)
        self.stop(procs)
        latencies.sort()
        return (
            latencies[len(latencies) // 2],
            latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
            len(latencies),
        )

    def _collect_acked(
        self, keys: Keys, outstanding: dict[str, list[tuple[int, int]]], latencies: list[int]
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        for stream in outstanding:
            pipe.xpending(stream, GROUP)
            pipe.xinfo_groups(stream)
        replies = pipe.execute()
        now = ms_now()
        for i, (stream, ids) in enumerate(outstanding.items()):
            summary, groups = replies[2 * i], replies[2 * i + 1]
            delivered = next(
                (stream_id(g["last-delivered-id"]) for g in groups if g["name"] == GROUP.encode()), (0, 0)
            )
            oldest = stream_id(summary["min"]) if summary["pending"] else None
            done = 0
            for entry in ids:
                if entry > delivered or (oldest is not None and entry >= oldest):
                    break
                latencies.append(now - entry[0])
                done += 1
            del ids[:done]

    def peak_rss(self, entries: int) -> tuple[int, float]:
        """Peak RSS (kB) of one consumer working through a backlog of `entries`, and its drain rate."""
        self.reset_database()
        stream, keys = self.new_stream("rss")
        sim = self.simulator(0.2)
        publisher = Publisher(self.client, keys, buffer_limit=entries + 1, hard_cap=entries + 1)
        total = 0
        while total < entries:
            snapshots = sim.cycle(self.next_ts())[: entries - total]
            publisher.publish_cycle(snapshots)
            total += len(snapshots)
        # Trimming as in production, so the acknowledged backlog leaves Redis while the consumer works.
        procs = self.start_consumers(stream, 1, ODDS_TRIM_INTERVAL_S="5")
        start = time.perf_counter()
        end = self.wait_drained(keys, total)
        peak = vm_hwm_kb(procs[0].pid)
        self.stop(procs)
        return peak, total / (end - start)


def count_changes(warm: list[Snapshot], backlog: list[list[Snapshot]]) -> int:
    """How many snapshots of the backlog differ from their feed's previous one: the rows that must appear."""
    current = {(s.event, s.bookmaker): s.markets for s in warm}
    changes = 0
    for snapshots in backlog:
        for s in snapshots:
            key = (s.event, s.bookmaker)
            if s.markets != current[key]:
                changes += 1
                current[key] = s.markets
    return changes


def to_dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@contextmanager
def bench(redis_url: str, database_url: str, size: Size) -> Iterator[Bench]:
    b = Bench(redis_url, database_url, size)
    try:
        b.setup()
        yield b
    finally:
        b.teardown()


def run(args: argparse.Namespace) -> Report:
    size = (
        Size(events=200, backlog_cycles=5, latency_s=4.0, rss_backlog=args.backlog or 20_000)
        if args.quick
        else Size(events=2000, backlog_cycles=5, latency_s=15.0, rss_backlog=args.backlog or 1_000_000)
    )
    report = Report()
    per_cycle = size.events * len(BOOKMAKERS)
    say(
        f"workload: {size.events} events x {len(BOOKMAKERS)} bookmakers x {MARKETS} markets = {per_cycle} "
        f"snapshots per cycle, {size.backlog_cycles} cycles per backlog, seed {SEED}"
    )
    with bench(args.redis_url, args.database_url, size) as b:
        say("producer publish rate ...")
        published, raw = b.publish_rates()
        report.row(
            "Producer publish rate (publish_cycle)",
            f"{published:,.0f}/s",
            f"raw pipelined XADD of the same bytes {raw:,.0f}/s; ratio {published / raw:.0%}",
        )
        say("producer cycle time, consumer and Postgres stalled ...")
        normal_s, stalled_s = b.producer_under_stall()
        report.row(
            f"Producer cycle time ({per_cycle} snapshots)",
            f"{normal_s * 1000:.0f} ms normal",
            f"{stalled_s * 1000:.0f} ms with the consumer stopped and Postgres locked",
        )
        runs: dict[tuple[float, int], RunResult] = {}
        for rate in RATES:
            for consumers in (1, 2):
                say(f"throughput at {rate:.0%} change, {consumers} consumer(s) ...")
                runs[rate, consumers] = b.throughput(rate, consumers)
        for rate in RATES:
            one, two = runs[rate, 1], runs[rate, 2]
            report.row(
                f"End to end, {rate:.0%} change",
                f"{one.per_s:,.0f}/s one consumer",
                f"{two.per_s:,.0f}/s two consumers; {one.snapshots:,} snapshot backlog",
            )
        for rate in RATES:
            one = runs[rate, 1]
            report.row(
                f"Yardstick, {rate:.0%} change",
                f"{one.snapshots / one.yardstick_s:,.0f}/s bare minimum",
                f"pipeline takes {one.seconds / one.yardstick_s:.1f}x its time (XREADGROUP+XACK, "
                "binary COPY of changes, one UPDATE)",
            )
        ok = True
        full = runs[1.0, 1]
        bytes_per_full = full.table_bytes / max(1, full.snapshot_rows)
        for (rate, consumers), r in sorted(runs.items()):
            right = (
                r.snapshot_rows == r.expected_changes == r.stats.get("changed", 0)
                and r.market_rows == r.expected_changes * MARKETS
            )
            ok &= right
            if consumers == 1:
                per_k = 1000 / r.snapshots
                everything = bytes_per_full * r.snapshots
                report.row(
                    f"Postgres writes per 1,000 snapshots, {rate:.0%} change",
                    f"{(r.snapshot_rows + r.market_rows) * per_k:,.0f} rows inserted, "
                    f"{r.updated_rows * per_k:,.0f} updated ({r.hot_updates * per_k:,.0f} HOT)",
                    f"{r.table_bytes * per_k / 1024:,.0f} kB = {r.table_bytes / everything:.0%} of "
                    f"writing every snapshot ({1 + MARKETS:,}k rows, {bytes_per_full * 1000 / 1024:,.0f} kB)",
                )
            say(
                f"  rows check {rate:.0%}/{consumers}: snapshot rows {r.snapshot_rows}, expected changes "
                f"{r.expected_changes}, consumer 'changed' {r.stats.get('changed', 0)}, market rows "
                f"{r.market_rows} -> {'OK' if right else 'MISMATCH'}"
            )
        report.row(
            "Snapshot rows written = changes",
            "yes" if ok else "NO: see the rows check above",
            "checked in every run against the simulator's own changes",
        )
        half = runs[0.2, 1].per_s / 2
        say(f"latency at {half:,.0f} snapshots/s ...")
        p50, p99, n = b.latency(half)
        report.row(
            f"Latency XADD to commit+XACK at {half:,.0f}/s (20 % change)",
            f"p50 {p50} ms",
            f"p99 {p99} ms over {n:,} entries",
        )
        say(f"peak RSS with a {size.rss_backlog:,} entry backlog ...")
        peak_kb, drain = b.peak_rss(size.rss_backlog)
        report.row(
            f"Consumer peak RSS, {size.rss_backlog:,} entry backlog",
            f"{peak_kb / 1024:,.0f} MB",
            f"drained at {drain:,.0f}/s (20 % change, trimming on)",
        )
    return report


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 events and a 20,000 entry RSS backlog")
    parser.add_argument("--backlog", type=int, help="entries for the peak RSS run (default 1,000,000)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    report = run(args)
    print("| Measure | Result | Alongside |")
    print("|---|---|---|")
    print("\n".join(report.lines))
    print(f"\n(bench took {time.perf_counter() - started:,.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
