"""`python -m consumer demo`: a short, visible run of the whole pipeline on this machine.

It uses the configured Redis and Postgres; when either cannot be reached it starts a private one from the
locally installed server binaries, or says exactly what to install. The simulator and one consumer run as
real processes, exactly as an operator would run them.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack

import psycopg
import redis

from consumer.localservers import PostgresServer, RedisServer, postgres_bin_dir
from consumer.migrate import create_database_if_missing, upgrade
from consumer.status import collect
from shared.db import database_name, psycopg_url, with_database
from shared.logs import redact
from shared.settings import Settings

WORKDIR = pathlib.Path(".demo")
CHART = WORKDIR / "odds-movement.png"
# The market of this run whose prices moved most, among those with few enough outcomes for one chart.
_MOST_MOVED = """
SELECT event, market, specifier FROM odds_history
WHERE last_confirmed_at >= %s
GROUP BY event, market, specifier
HAVING count(DISTINCT outcome) <= 4
ORDER BY count(DISTINCT (bookmaker, outcome, odds)) DESC, event, market, specifier
LIMIT 1
"""
EVENTS, BOOKMAKERS, MARKETS, CYCLES, INTERVAL_S, CHANGE_RATE = (
    200,
    "sportybet,bet9ja,betking",
    40,
    10,
    1.0,
    0.2,
)


def main() -> int:
    settings = Settings.from_env()
    with ExitStack() as servers:
        try:
            reachable = _reachable_services(settings, servers)
        except RuntimeError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 1
        # A stream of its own per run, so the figures printed are this run's alone.
        # A private server stops with the demo, so the closing hints would point nowhere.
        private = reachable != settings
        settings = reachable.with_(stream=f"odds-demo:{int(time.time())}")
        print(f"redis    {redact(settings.redis_url)}\npostgres {redact(settings.database_url)}")
        print(f"stream   {settings.stream}:0..{settings.shards - 1}, group {settings.group}")
        create_database_if_missing(settings.database_url)
        upgrade(settings.database_url)
        return _run(settings, private)
    return 0


def _run(settings: Settings, private: bool) -> int:
    env = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "DATABASE_URL": settings.database_url,
        "ODDS_STREAM": settings.stream,
    }
    WORKDIR.mkdir(exist_ok=True)
    simulate = ["simulate", "--events", str(EVENTS), "--bookmakers", BOOKMAKERS, "--markets", str(MARKETS)]
    simulate += ["--cycles", str(CYCLES), "--interval-s", str(INTERVAL_S), "--change-rate", str(CHANGE_RATE)]
    since = dt.datetime.now(dt.UTC)
    producer = _start("producer", [*simulate, "--seed", "7"], env)
    consumer = _start("consumer", ["run", "--name", "demo-1"], env)
    client = redis.Redis.from_url(settings.redis_url)
    keys = settings.keys
    print(
        f"\npublishing {CYCLES} cycles of {EVENTS} events x {len(BOOKMAKERS.split(','))} bookmakers x "
        f"{MARKETS} markets, {CHANGE_RATE:.0%} changing per cycle (logs in {WORKDIR}/)\n"
    )
    print(f"{'t':>5}  {'published':>9}  {'written':>8}  {'confirmed':>9}  {'backlog':>7}")
    started = time.monotonic()
    try:
        while True:
            time.sleep(1.0)
            done = producer.poll() is not None
            status = collect(client, keys)
            print(_progress_line(time.monotonic() - started, status.counters, status.backlog))
            if done and status.backlog == 0 and status.counters.get("published", 0) > 0:
                break
            if consumer.poll() is not None:
                print("demo: the consumer exited early; see .demo/consumer.log", file=sys.stderr)
                return 1
    finally:
        for proc in (producer, consumer):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    final = collect(client, keys)
    _summary(settings, final.counters, final.backlog, private)
    _chart(settings, since)
    return 0 if producer.returncode == 0 and consumer.returncode == 0 else 1


def _chart(settings: Settings, started: dt.datetime) -> None:
    """Draw the odds movement of the market that moved most in this run, with the history command."""
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        found = conn.execute(_MOST_MOVED, (started,)).fetchone()
    if found is None:
        return
    event, market, specifier = (str(value) for value in found)
    args = ["history", event, "--market", market, "--specifier", specifier, "--since", started.isoformat()]
    drawn = subprocess.run(
        [sys.executable, "-m", "consumer", *args, "--plot", str(CHART)],
        env={**os.environ, "DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
    )
    shown = " ".join(f"'{a}'" if not a or " " in a else a for a in args)
    if drawn.returncode == 0:
        print(f"\nodds movement chart  {CHART}  (python -m consumer {shown} --plot {CHART.name})")
    else:
        print(f"\nno odds movement chart: {drawn.stderr.strip()}")


def _start(package: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Run `python -m package args`, its JSON log going to a file of the demo's folder."""
    with open(WORKDIR / f"{package}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", package, *args, "--log-json"], env=env, stderr=log)


def _progress_line(elapsed_s: float, counters: dict[str, int], backlog: int) -> str:
    return (
        f"{elapsed_s:>4.0f}s  {counters.get('published', 0):>9}  {counters.get('changed', 0):>8}  "
        f"{counters.get('unchanged', 0):>9}  {backlog:>7}"
    )


def _summary(settings: Settings, counters: dict[str, int], backlog: int, private: bool) -> None:
    published, changed, unchanged = (counters.get(k, 0) for k in ("published", "changed", "unchanged"))
    everything = published * (1 + MARKETS)  # a snapshot row and a row per market, for every snapshot
    with psycopg.connect(psycopg_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM market_versions) FROM snapshots"
        ).fetchone()
    written = (row[0] + row[1]) if row else 0
    print(f"""
published               {published:>9}  snapshots (one per event and bookmaker per cycle)
written                 {changed:>9}  new snapshot rows, each with the market versions it changed
confirmed only          {unchanged:>9}  unchanged: last_confirmed_at moved forward, nothing inserted
stale / duplicate       {counters.get("stale", 0):>4} / {counters.get("duplicate", 0):<4}
dead-lettered           {counters.get("dead_lettered", 0):>9}
backlog                 {backlog:>9}  entries not yet acknowledged
rows in the database    {written:>9}  against {everything} if every snapshot were written \
({1 - written / max(everything, 1):.0%} saved)
database totals         {row[0] if row else 0:>9}  snapshot rows, {row[1] if row else 0} market versions in \
{database_name(settings.database_url)}""")
    if not private:
        print(f"""
try:  psql "{redact(psycopg_url(settings.database_url))}" -c "SELECT * FROM odds_history LIMIT 5"
      .venv/bin/python -m consumer status --stream {settings.stream}""")


def _reachable_services(settings: Settings, servers: ExitStack) -> Settings:
    try:
        redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError:
        if shutil.which("redis-server") is None:
            raise RuntimeError(
                f"Redis is not reachable at {redact(settings.redis_url)} and redis-server is not "
                "installed: install it (Debian/Ubuntu: apt-get install redis-server) or set "
                "REDIS_URL"
            ) from None
        local_redis = servers.enter_context(RedisServer(WORKDIR.resolve(), appendfsync="everysec"))
        print(f"Redis not reachable at {redact(settings.redis_url)}: started a private one")
        settings = settings.with_(redis_url=local_redis.url)
    try:
        with psycopg.connect(
            psycopg_url(with_database(settings.database_url, "postgres")), connect_timeout=3
        ):
            pass
    except psycopg.OperationalError:
        if postgres_bin_dir() is None:
            raise RuntimeError(
                f"Postgres is not reachable at {redact(settings.database_url)} and its server is "
                "not installed: install it (Debian/Ubuntu: apt-get install postgresql) or set "
                "DATABASE_URL"
            ) from None
        local_pg = servers.enter_context(PostgresServer(WORKDIR.resolve()))
        print(f"Postgres not reachable at {redact(settings.database_url)}: started a private one")
        settings = settings.with_(
            database_url=local_pg.url_for(database_name(settings.database_url) or "odds")
        )
    return settings
