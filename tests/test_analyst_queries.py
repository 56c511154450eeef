"""The README's analyst queries: each gives what the published snapshots say, through the index named."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from consumer.daemon import Daemon
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.settings import Settings
from shared.wire import Market, Snapshot
from tests.analyst_queries import plan_text, readme_queries
from tests.history import expected_history
from tests.support import drain

Conn = psycopg.Connection[tuple[object, ...]]
KICK_OFF = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)  # the time the README's queries name
BOOKMAKERS = ("bet9ja", "betking", "sportybet")
STEP_MS = 7 * 60_000


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def event_one() -> list[Snapshot]:
    """sr:match:1 from two hours before kick-off to one after, every 7 minutes, odds per bookmaker."""
    snapshots = []
    start = ms(KICK_OFF) - 120 * 60_000
    for b, bookmaker in enumerate(BOOKMAKERS):
        for i in range(26):
            home = round(2.0 + 0.01 * ((i * (b + 3)) % 11), 2)
            markets = [Market("1X2", "", {"1": home, "X": 3.2 + b / 10, "2": round(5.0 - home, 2)})]
            if i % 5 != 3:  # Over/Under is off the board now and then
                markets.append(
                    Market("Over/Under", "total=2.5", {"Over": round(1.7 + 0.02 * (i // 4), 2), "Under": 2.0})
                )
            snapshots.append(Snapshot("sr:match:1", bookmaker, start + i * STEP_MS + b, tuple(markets)))
    return snapshots


def recent() -> list[Snapshot]:
    """Two hours of another event's cycles, the last ones in the last ten minutes."""
    sim = Simulator(SimulationSpec(events=3, bookmakers=BOOKMAKERS, markets=8, seed=5, change_rate=0.6))
    now = ms(dt.datetime.now(dt.UTC))
    return [s for i in range(30) for s in sim.cycle(now - (29 - i) * 4 * 60_000)]


@pytest.fixture
def published(settings: Settings, db: Conn) -> list[Snapshot]:
    snapshots = event_one() + recent()
    Publisher.from_settings(settings).publish_cycle(sorted(snapshots, key=lambda s: s.captured_at_ms))
    daemon = Daemon(settings)
    drain(daemon)
    daemon.writer.discard()
    db.execute("ANALYZE")
    return snapshots


def run(db: Conn, name: str) -> list[tuple[object, ...]]:
    return db.execute(readme_queries()[name]).fetchall()


def markets_at(
    snapshots: list[Snapshot],
) -> dict[tuple[str, str], list[tuple[int, dict[tuple[str, str], dict[str, float]]]]]:
    by_feed: dict[tuple[str, str], list[tuple[int, dict[tuple[str, str], dict[str, float]]]]] = {}
    for s in sorted(snapshots, key=lambda s: s.captured_at_ms):
        by_feed.setdefault((s.event, s.bookmaker), []).append(
            (s.captured_at_ms, {(m.market, m.specifier): dict(m.outcomes) for m in s.markets})
        )
    return by_feed


def at(ts_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)


def test_the_history_of_one_outcome(db: Conn, published: list[Snapshot]) -> None:
    # One row per stored snapshot that shows the outcome, as one in-order writer would store them
    want = [
        (at(run.captured_ms), at(run.last_confirmed_ms), odds)
        for run in expected_history(published)[("sr:match:1", "bet9ja")]
        for market, specifier, outcome, odds in run.content
        if (market, specifier, outcome) == ("Over/Under", "total=2.5", "Over")
    ]
    assert want and run(db, "outcome history") == want


def test_opening_and_closing_odds_of_every_outcome(db: Conn, published: list[Snapshot]) -> None:
    want: dict[tuple[str, str, str, str], list[float]] = {}
    for (event, bookmaker), history in markets_at(published).items():
        if event != "sr:match:1":
            continue
        for ts, markets in history:
            if ts >= ms(KICK_OFF):
                continue
            for (market, specifier), outcomes in markets.items():
                for outcome, odds in outcomes.items():
                    want.setdefault((bookmaker, market, specifier, outcome), []).append(odds)
    got = {tuple(r[:4]): (r[4], r[5]) for r in run(db, "opening and closing")}
    assert got == {k: (v[0], v[-1]) for k, v in want.items()}


def test_the_best_price_of_each_outcome_across_bookmakers(db: Conn, published: list[Snapshot]) -> None:
    best: dict[str, tuple[float, str]] = {}
    for (event, bookmaker), history in markets_at(published).items():
        if event != "sr:match:1":
            continue
        _, markets = max((h for h in history if h[0] <= ms(KICK_OFF)), key=lambda h: h[0])
        for outcome, odds in markets[("1X2", "")].items():
            if outcome not in best or (-odds, bookmaker) < (-best[outcome][0], best[outcome][1]):
                best[outcome] = (odds, bookmaker)
    assert {r[0]: (r[1], r[2]) for r in run(db, "best price")} == best


def test_everything_that_moved_in_the_last_minutes(db: Conn, published: list[Snapshot]) -> None:
    since = ms(dt.datetime.now(dt.UTC)) - 10 * 60_000
    want = set()
    for (event, bookmaker), history in markets_at(published).items():
        before: dict[tuple[str, str], dict[str, float]] = {}
        for ts, markets in history:
            if ts >= since:
                for key in markets.keys() | before.keys():
                    if markets.get(key) != before.get(key):
                        want.add((event, bookmaker, *key, at(ts), key not in markets))
            before = markets
    got = set(run(db, "moved lately"))
    assert want and got == want


@pytest.mark.parametrize(
    ("name", "indexes"),
    [
        ("outcome history", ("market_series_feed_market_key", "market_versions_pkey")),
        ("opening and closing", ("snapshots_feed_captured_key", "market_versions_pkey")),
        ("best price", ("snapshots_feed_captured_key", "market_versions_pkey")),
        # On tables this small the btree on (feed_id, captured_at) serves the time range as well as the
        # BRIN on captured_at; the bench shows which one its larger tables get.
        ("moved lately", ("market_versions_snapshot_brin",)),
    ],
)
def test_each_query_is_served_by_its_index(
    db: Conn, published: list[Snapshot], name: str, indexes: tuple[str, ...]
) -> None:
    # With sequential scans priced out, as they are on a table much larger than this test's
    db.execute("SET enable_seqscan = off")
    try:
        plan = plan_text(db, readme_queries()[name])
    finally:
        db.execute("RESET enable_seqscan")
    for index in indexes:
        assert index in plan, plan
    assert "Seq Scan" not in plan, plan
