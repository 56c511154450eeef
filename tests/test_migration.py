"""Migration 0004 converts a database that the previous consumer filled, without changing odds_history.

The database is filled by a real run of the code before the per-market layout (exported from git), then
upgraded by the current migrations. The view must give the same rows before and after, the versions must
be exactly the changes of the published snapshots, the current consumer must carry on from there, and a
downgrade must give the same rows back in the old layout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import redis
from alembic import command

from consumer.daemon import Daemon
from consumer.migrate import alembic_config, upgrade
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.db import psycopg_url, with_database
from shared.keys import Keys
from shared.settings import Settings
from shared.wire import Market, Snapshot
from tests.conftest import missing
from tests.history import Feed, compare, expected_history, stored_history
from tests.old_checkout import NoHistory, commit_before, export
from tests.support import drain, env_for, wait_until_drained

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]
HISTORY = (
    "SELECT event, bookmaker, market, specifier, outcome, odds, captured_at, last_confirmed_at"
    " FROM odds_history ORDER BY event, bookmaker, captured_at, market, specifier, outcome"
)


def crafted(start_ts: int) -> list[Snapshot]:
    """One feed through every kind of change: odds, a market gone and back, an outcome set, odd odds."""
    one_x_two = Market("1X2", "", {"1": 2.0, "X": 3.1, "2": 2.9})
    totals = Market("Over/Under", "total=2.5", {"Over": 1.85, "Under": 1.95})
    contents: list[tuple[Market, ...]] = [
        (one_x_two, totals),
        (one_x_two, totals),  # unchanged: only confirmed
        (Market("1X2", "", {"1": 2.1, "X": 3.0, "2": 2.9}), totals),
        (Market("1X2", "", {"1": 2.1, "X": 3.0, "2": 2.9}),),  # Over/Under disappears
        (Market("1X2", "", {"1": 2.1, "X": 3.0, "2": 2.9}), totals),  # and comes back as it was
        (Market("1X2", "", {"1": 2.1, "2": 1.8}), totals),  # the outcome set changes
        (
            Market("1X2", "", {"1": 2.1, "2": 1.8}),
            totals,
            Market("Odd", "", {"a": 1.23456, "b": 1_000_000.0}),
        ),
    ]
    return [
        Snapshot("sr:match:1", "alpha", start_ts + i * 1000, markets) for i, markets in enumerate(contents)
    ]


def changed_markets(published: list[Snapshot]) -> int:
    """Per feed, in capture order: markets whose outcomes and odds differ from the snapshot before, plus
    markets that were there and are not. Computed from the published snapshots alone."""
    before: dict[Feed, dict[tuple[str, str], frozenset[tuple[str, float]]]] = {}
    changes = 0
    for s in sorted(published, key=lambda s: s.captured_at_ms):
        old = before.get((s.event, s.bookmaker), {})
        new = {(m.market, m.specifier): frozenset(m.outcomes.items()) for m in s.markets}
        changes += sum(old.get(k) != v for k, v in new.items()) + len(old.keys() - new.keys())
        before[(s.event, s.bookmaker)] = new
    return changes


def publish(settings: Settings, start_ts: int, cycles: int, sim: Simulator) -> list[Snapshot]:
    publisher = Publisher.from_settings(settings)
    published = crafted(start_ts)
    publisher.publish_cycle(published)
    for i in range(cycles):
        snapshots = sim.cycle(start_ts + 100_000 + i * 1000)
        publisher.publish_cycle(snapshots)
        published += snapshots
    return published


def history(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute(HISTORY).fetchall()


def test_0004_keeps_every_history_row_of_a_database_the_previous_consumer_filled(
    settings: Settings, client: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    try:
        old = export(commit_before(), tmp_path / "old")
    except NoHistory as exc:
        missing(f"the previous consumer cannot be exported: {exc}")
    url = with_database(settings.database_url, f"odds_migration_{os.getpid()}_{tmp_path.name[-8:]}")
    settings = settings.with_(database_url=url)
    env = env_for(settings) | {"PYTHONPATH": str(old)}
    try:
        # Given a database migrated and filled by the previous consumer, as a real run fills it
        subprocess.run([sys.executable, "-m", "consumer", "migrate"], cwd=old, env=env, check=True)
        sim = Simulator(
            SimulationSpec(events=15, bookmakers=("alpha", "bravo"), markets=6, seed=4, change_rate=0.4)
        )
        published = publish(settings, TS, 8, sim)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--name", "old"], cwd=old, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until_drained(client, keys)
        finally:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(timeout=30)
        with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('markets') IS NOT NULL").fetchone() == (True,)
            before = history(conn)
        # When the current migrations upgrade it
        upgrade(url)
        with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
            # Then odds_history gives the very same rows
            assert history(conn) == before and len(before) > 1000
            # And a version is stored exactly for each market that changed, appeared or disappeared
            versions = conn.execute("SELECT count(*) FROM market_versions").fetchone()
            assert versions == (changed_markets(published),)
            # And the odds that are no whole thousandths are kept as they were sent
            assert conn.execute(
                "SELECT count(*) FROM market_versions WHERE exact_odds IS NOT NULL"
            ).fetchone() == (1,)
        # And the current consumer carries the history on from there
        published += publish(settings, TS + 1_000_000, 8, sim)
        daemon = Daemon(settings)
        drain(daemon)
        daemon.writer.discard()
        with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
            report = compare(expected_history(published), stored_history(conn))
            assert report.ok, report.summary()
            # writing one version per changed, new or gone market, and nothing for the others
            versions = conn.execute("SELECT count(*) FROM market_versions").fetchone()
            assert versions == (changed_markets(published),)
            after = history(conn)
        # And a downgrade gives the same rows back in the old layout
        command.downgrade(alembic_config(url), "0003")
        with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('market_versions') IS NULL").fetchone() == (True,)
            assert history(conn) == after
    finally:
        with psycopg.connect(psycopg_url(with_database(url, "postgres")), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


ODDS = (1.01, 2.5, 1.001, 999_999.999, 1_000_000.0, 1.23456, 1.0005, 3.0)


def test_stored_odds_come_back_as_the_very_floats_the_wire_carried(
    settings: Settings, db: Conn, client: redis.Redis
) -> None:
    # Given odds that are whole thousandths (stored as integers) and odds that are not (stored as sent)
    snapshots = [
        Snapshot(f"e{i}", "alpha", TS, (Market("M", "", {"a": odds, "b": 2.0}),))
        for i, odds in enumerate(ODDS)
    ]
    Publisher.from_settings(settings).publish_cycle(snapshots)
    # When the consumer stores them
    daemon = Daemon(settings)
    drain(daemon)
    daemon.writer.discard()
    # Then the view gives back each float exactly
    rows = db.execute("SELECT event, odds FROM odds_history WHERE outcome = 'a' ORDER BY event").fetchall()
    assert rows == sorted((f"e{i}", odds) for i, odds in enumerate(ODDS))
    # And only the markets with an odds value that is no whole thousandth needed the float8 column
    exact = db.execute("SELECT count(*) FROM market_versions WHERE exact_odds IS NOT NULL").fetchone()
    assert exact == (sum(round(o * 1000) / 1000 != o for o in ODDS),)
