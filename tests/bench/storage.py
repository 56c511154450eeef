"""What the bench's backlogs should store, and what storing them costs at the least and at the most.

The changes are counted from the simulator's snapshots alone, not by the pipeline's code: snapshots that
differ from their feed's previous one, markets within them that differ (or appeared, or disappeared), and
outcome prices that moved. The yardstick is the bare minimum of the same work on the same data; the full
write is what storing every snapshot with every market costs, the layout before per-market versions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from producer.publisher import Publisher
from shared.keys import Keys
from shared.wire import Snapshot, market_row
from tests.bench.harness import Bench

FULL_WRITE_SNAPSHOTS = 1000

MarketKey = tuple[str, str, str, str]  # event, bookmaker, market, specifier


@dataclass
class Changes:
    snapshots: int = 0
    markets: int = 0
    prices: int = 0
    # Per changed snapshot, in backlog order: its feed and the markets it changed (None: gone).
    changed: list[tuple[Snapshot, list[tuple[MarketKey, Any]]]] = field(default_factory=list)


def count_changes(warm: list[Snapshot], backlog: list[list[Snapshot]]) -> Changes:
    current = {(s.event, s.bookmaker): _markets(s) for s in warm}
    changes = Changes()
    for snapshots in backlog:
        for s in snapshots:
            before, after = current.get((s.event, s.bookmaker), {}), _markets(s)
            if after == before:
                continue
            moved = [
                ((s.event, s.bookmaker, *key), after.get(key))
                for key in sorted(before.keys() | after.keys())
                if before.get(key) != after.get(key)
            ]
            changes.snapshots += 1
            changes.markets += len(moved)
            for key, outcomes in moved:
                old = before.get(key[2:], {})
                new = outcomes or {}
                changes.prices += sum(old.get(name) != odds for name, odds in new.items())
            changes.changed.append((s, moved))
            current[(s.event, s.bookmaker)] = after
    return changes


def _markets(s: Snapshot) -> dict[tuple[str, str], dict[str, float]]:
    return {(m.market, m.specifier): dict(m.outcomes) for m in s.markets}


def full_write_bytes(b: Bench, snapshots: list[Snapshot]) -> float:
    """Table bytes per snapshot when every snapshot is stored with all its markets, as before versions."""
    rows = snapshots[:FULL_WRITE_SNAPSHOTS]
    with psycopg.connect(b.db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS f_snapshots, f_markets")
        conn.execute("CREATE TABLE f_snapshots (LIKE snapshots INCLUDING ALL) WITH (fillfactor = 80)")
        conn.execute(
            "CREATE TABLE f_markets (snapshot_id bigint NOT NULL, market text NOT NULL,"
            " specifier text NOT NULL, outcomes text[] NOT NULL, odds float8[] NOT NULL)"
        )
        conn.execute("CREATE INDEX ON f_markets (snapshot_id)")
        with conn.cursor().copy(
            "COPY f_snapshots (id, feed_id, captured_at, last_confirmed_at, fingerprint) FROM STDIN"
        ) as copy:
            for i, s in enumerate(rows):
                copy.write_row((i, i, to_dt(s.captured_at_ms), to_dt(s.captured_at_ms), b"x" * 16))
        with conn.cursor().copy("COPY f_markets FROM STDIN") as copy:
            for i, s in enumerate(rows):
                for r in map(market_row, s.markets):
                    copy.write_row((i, r.market, r.specifier, list(r.outcomes), list(r.odds)))
        size = conn.execute(
            "SELECT pg_total_relation_size('f_snapshots') + pg_total_relation_size('f_markets')"
        ).fetchone()
        conn.execute("DROP TABLE f_snapshots, f_markets")
    return int(size[0] if size else 0) / len(rows)


def yardstick(
    b: Bench, keys: Keys, warm: list[Snapshot], backlog: list[list[Snapshot]], changes: Changes
) -> float:
    """The bare minimum on the same data: XREADGROUP + XACK of every entry, binary COPY of the changed
    snapshots' rows and of the versions of their changed markets, and one UPDATE for the unchanged ones,
    all without any checking or planning."""
    for stream in keys.all_shards():
        b.client.xgroup_create(stream, "yardstick", id="$")
    # Re-add the backlog's entries under the yardstick group (untimed): the same bytes, read once.
    publisher = Publisher(b.client, keys)
    for snapshots in backlog:
        publisher.publish_cycle(snapshots)
    feeds = {(s.event, s.bookmaker): i + 1 for i, s in enumerate(warm)}
    series: dict[MarketKey, int] = {}
    snapshot_rows: list[tuple[Any, ...]] = []
    version_rows: list[tuple[Any, ...]] = []
    changed_ids = set()
    for n, (s, moved) in enumerate(changes.changed):
        sid = len(feeds) + n + 1
        changed_ids.add(id(s))
        ts = to_dt(s.captured_at_ms)
        snapshot_rows.append((sid, feeds[(s.event, s.bookmaker)], ts, ts, b"x" * 16))
        for key, outcomes in moved:
            series_id = series.setdefault(key, len(series) + 1)
            if outcomes is None:
                version_rows.append((series_id, sid, None, None, None))
            else:
                names = sorted(outcomes)
                milli = [round(outcomes[name] * 1000) for name in names]
                version_rows.append((series_id, sid, names, milli, None))
    unchanged = {
        feeds[(s.event, s.bookmaker)]: s.captured_at_ms
        for snapshots in backlog
        for s in snapshots
        if id(s) not in changed_ids
    }
    with psycopg.connect(b.db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS y_snapshots, y_versions")
        conn.execute("CREATE TABLE y_snapshots (LIKE snapshots INCLUDING ALL) WITH (fillfactor = 80)")
        conn.execute("CREATE TABLE y_versions (LIKE market_versions INCLUDING ALL)")
        with conn.cursor().copy(
            "COPY y_snapshots (id, feed_id, captured_at, last_confirmed_at, fingerprint) FROM STDIN"
        ) as copy:
            for s in warm:
                ts = to_dt(s.captured_at_ms)
                copy.write_row((feeds[(s.event, s.bookmaker)], feeds[(s.event, s.bookmaker)], ts, ts, b"x"))
        conn.execute("VACUUM ANALYZE y_snapshots")
        start = time.perf_counter()
        streams: dict[Any, Any] = {stream: ">" for stream in keys.all_shards()}
        while True:
            reply: list[Any] = b.client.xreadgroup("yardstick", "y", streams, count=500)  # type: ignore[assignment]
            if not reply:
                break
            pipe = b.client.pipeline(transaction=False)
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
                "COPY y_versions (series_id, snapshot_id, outcomes, odds, exact_odds)"
                " FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "int8", "text[]", "int4[]", "float8[]"])
                for vrow in version_rows:
                    copy.write_row(vrow)
            conn.execute(
                "UPDATE y_snapshots s SET last_confirmed_at = v.ts FROM unnest(%s::bigint[], "
                "%s::timestamptz[]) AS v(id, ts) WHERE s.id = v.id",
                (list(unchanged), [to_dt(t) for t in unchanged.values()]),
            )
        elapsed = time.perf_counter() - start
        conn.execute("DROP TABLE y_snapshots, y_versions")
    return elapsed


def to_dt(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
