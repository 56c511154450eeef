"""The bench harness: a bench database and stream prefix, consumer processes, waits on Redis and Postgres."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from producer.simulator import SimulationSpec, Simulator
from shared.counters import read_totals
from shared.db import psycopg_url, with_database
from shared.keys import Keys
from shared.redis_client import connect

BOOKMAKERS = ("alpha", "bravo", "charlie")
MARKETS = 40
SEED = 7
SHARDS = 4
GROUP = "odds-writers"
POLL_S = 0.01
# The repository root, where `python -m consumer` resolves: tests/bench/harness.py is three levels down.
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Size:
    events: int
    backlog_cycles: int  # cycles per timed backlog, after the warm-up cycle
    latency_s: float
    rss_backlog: int
    feeds: int  # distinct feeds for the memory-growth row
    large_events: int  # events of the 5,000-market row, times the bookmakers and large_cycles
    large_cycles: int


def ms_now() -> int:
    return int(time.time() * 1000)


class Bench:
    """A bench database and stream prefix; root is the checkout whose consumer runs (this one by default)."""

    def __init__(
        self, redis_url: str, database_url: str, size: Size, root: Path = ROOT, name: str = ""
    ) -> None:
        self.size = size
        self.root = root
        self.redis_url = redis_url
        self.admin_url = psycopg_url(database_url)
        self.db_name = f"odds_bench_{os.getpid()}{name}"
        self.db_url = with_database(self.admin_url, self.db_name)
        self.prefix = f"bench:{os.getpid()}{name}"
        self.client = connect(redis_url, 30.0)
        self.tmp = Path(tempfile.mkdtemp(prefix="odds-bench-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.streams_used: list[str] = []
        self.shards = SHARDS  # of the streams new_stream() names from now on
        # Longer than publishing a backlog takes: the throughput runs SIGSTOP the consumers meanwhile, and
        # a lease lapsing then would time its take-over, not the pipeline. Consumers rebalance every
        # quarter of it, which is how long spreading the leases can take.
        self.lease_ttl_ms = 60_000
        self.clock_ms = ms_now() - 3_600_000  # capture times: an hour back, one second per cycle

    # --- setup and teardown -------------------------------------------------------------------------

    def setup(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        subprocess.run(
            [sys.executable, "-m", "consumer", "migrate", "--log-level", "WARNING"],
            env=self.env("unused"),
            check=True,
            cwd=self.root,
            stdout=subprocess.DEVNULL,
        )

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
        for prefix in self.streams_used:
            patterns = Keys(prefix, GROUP, self.shards).patterns
            keys = [k for pattern in patterns for k in self.client.scan_iter(match=pattern, count=1000)]
            for i in range(0, len(keys), 500):
                self.client.delete(*keys[i : i + 500])
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def env(self, stream: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # `python -m consumer` from root imports root's packages, whatever is installed.
                "PYTHONPATH": str(self.root),
                "REDIS_URL": self.redis_url,
                "DATABASE_URL": self.db_url,
                "ODDS_STREAM": stream,
                "ODDS_SHARDS": str(self.shards),
                "ODDS_GROUP": GROUP,
                "ODDS_LEASE_TTL_MS": str(self.lease_ttl_ms),
                "ODDS_DB_DEADLINE_S": "4",
                # Trimming would delete the backlog that the yardstick reads again afterwards.
                "ODDS_TRIM_INTERVAL_S": "3600",
            }
        )
        env.update(extra)
        return env

    def new_stream(self, name: str) -> tuple[str, Keys]:
        # Numbered: a measure run twice (in pairs, or at another shard count) gets fresh streams.
        stream = f"{self.prefix}:{name}-{len(self.streams_used)}"
        self.streams_used.append(stream)
        return stream, Keys(stream, GROUP, self.shards)

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
            conn.execute(f"TRUNCATE {', '.join(self.tables(conn))} RESTART IDENTITY")

    @staticmethod
    def tables(conn: psycopg.Connection[Any]) -> list[str]:
        """The pipeline's tables, in whichever layout the database has."""
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            " ORDER BY 1"
        ).fetchall()
        return [str(r[0]) for r in rows]

    # --- consumers ----------------------------------------------------------------------------------

    def start_consumers(
        self, stream: str, count: int, names: Sequence[str] = (), **extra: str
    ) -> list[subprocess.Popen[bytes]]:
        """Start `count` consumer processes, named bench-0... unless names are given."""
        procs = []
        for i, name in zip(range(count), names or [f"bench-{i}" for i in range(count)], strict=True):
            log = (self.tmp / f"{stream.replace(':', '_')}-{name}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "consumer", "run", "--name", name, "--log-json"],
                    env=self.env(stream, **extra),
                    cwd=self.root,
                    stdout=log,
                    stderr=log,
                )
            )
        self.procs += procs
        return procs

    def wait_leases(self, keys: Keys, count: int) -> None:
        """Until the shards are spread evenly: each of `count` consumers holds its fair share.

        Consumers started together can race for the shards; the one that took more than its share gives
        the rest back at its next rebalance, and the other takes them at its own: two renewal periods."""
        timeout_s = 10 + 2.5 * self.lease_ttl_ms / 4000
        deadline = time.monotonic() + timeout_s
        shards = keys.shards
        fair = -(-shards // count)
        while time.monotonic() < deadline:
            owners = [h for h in self.lease_holders(keys) if h is not None]
            if (
                len(owners) == shards
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

    def lease_holders(self, keys: Keys) -> list[bytes | None]:
        """Who holds each shard's lease. The consumers of an older checkout named the lease
        "{stream}:lease:{group}:{n}", before a shard's keys shared its hash tag: either name counts."""
        pipe = self.client.pipeline(transaction=False)
        for n in range(keys.shards):
            pipe.get(keys.lease(n))
            pipe.get(f"{keys.stream}:lease:{keys.group}:{n}")
        replies = pipe.execute()
        return [new or old for new, old in zip(replies[0::2], replies[1::2], strict=True)]

    def stats(self, keys: Keys) -> dict[str, int]:
        return read_totals(self.client, keys)

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

    # --- table statistics ---------------------------------------------------------------------------

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
        """Snapshot rows, market rows (versions), updated rows (snapshots and feeds), HOT updates, bytes of
        the history tables (snapshots, and markets or market series and versions)."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            history = [t for t in self.tables(conn) if t not in ("feeds", "events", "bookmakers")]
            market_table = "market_versions" if "market_versions" in history else "markets"
            snaps, mkts = conn.execute(
                f"SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM {market_table})"
            ).fetchone() or (0, 0)
            upd, hot = conn.execute(
                "SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) "
                "FROM pg_stat_user_tables WHERE relname IN ('snapshots', 'feeds')"
            ).fetchone() or (0, 0)
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t", (history,)
            ).fetchone()
        return int(snaps), int(mkts), int(upd), int(hot), int(size[0] if size else 0)


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """--redis-url and --database-url, defaulting to the environment and then the local servers."""
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )


@contextmanager
def bench(
    redis_url: str, database_url: str, size: Size, root: Path = ROOT, name: str = ""
) -> Iterator[Bench]:
    b = Bench(redis_url, database_url, size, root, name)
    try:
        b.setup()
        yield b
    except BaseException:
        # The consumers' logs say why a run failed: kept then, removed with everything else otherwise.
        print(f"bench failed; consumer logs kept in {b.tmp}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(b.tmp, ignore_errors=True)
    finally:
        b.teardown()
