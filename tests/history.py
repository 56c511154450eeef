"""An independent checker: the history one in-order writer would store, against what Postgres holds.

It shares no code with the pipeline's change detection: content is compared as plain sets of
(market, specifier, outcome, odds), never through the wire format's fingerprint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from shared.wire import Snapshot

Feed = tuple[str, str]
Content = frozenset[tuple[str, str, str, float]]


@dataclass(frozen=True)
class Run:
    captured_ms: int
    last_confirmed_ms: int
    content: Content


@dataclass
class Report:
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.stale)

    def summary(self) -> str:
        return (
            f"lost={len(self.lost)} duplicated={len(self.duplicated)} stale={len(self.stale)}; "
            f"first: {(self.lost + self.duplicated + self.stale)[:3]}"
        )


def content_of(snapshot: Snapshot) -> Content:
    return frozenset(
        (m.market, m.specifier, name, float(odds))
        for m in snapshot.markets
        for name, odds in m.outcomes.items()
    )


def expected_history(published: Iterable[Snapshot]) -> dict[Feed, list[Run]]:
    """Apply each feed's snapshots in capture-time order; equal content extends the current run."""
    by_feed: dict[Feed, dict[int, Content]] = {}
    for s in published:
        by_feed.setdefault((s.event, s.bookmaker), {})[s.captured_at_ms] = content_of(s)
    history: dict[Feed, list[Run]] = {}
    for feed, sightings in by_feed.items():
        runs: list[Run] = []
        for ts in sorted(sightings):
            if runs and runs[-1].content == sightings[ts]:
                runs[-1] = Run(runs[-1].captured_ms, ts, runs[-1].content)
            else:
                runs.append(Run(ts, ts, sightings[ts]))
        history[feed] = runs
    return history


def stored_history(conn: psycopg.Connection[tuple[object, ...]]) -> dict[Feed, list[Run]]:
    rows = conn.execute(
        "SELECT event, bookmaker, (extract(epoch FROM captured_at) * 1000)::bigint,"
        " (extract(epoch FROM last_confirmed_at) * 1000)::bigint, market, specifier, outcome, odds"
        " FROM odds_history"
    ).fetchall()
    grouped: dict[tuple[Feed, int, int], set[tuple[str, str, str, float]]] = {}
    for event, bookmaker, captured, last, market, specifier, outcome, odds in rows:
        key = ((str(event), str(bookmaker)), int(str(captured)), int(str(last)))
        grouped.setdefault(key, set()).add((str(market), str(specifier), str(outcome), float(str(odds))))
    # Snapshot rows with equal capture time would merge above; the unique key forbids them, and
    # count_snapshot_rows() below checks the row count independently.
    history: dict[Feed, list[Run]] = {}
    for (feed, captured, last), content in sorted(grouped.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        history.setdefault(feed, []).append(Run(captured, last, frozenset(content)))
    return history


def count_snapshot_rows(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    return int(str(row[0])) if row else 0


def compare(expected: dict[Feed, list[Run]], stored: dict[Feed, list[Run]]) -> Report:
    report = Report()
    for feed in sorted(set(expected) | set(stored)):
        want = {r.captured_ms: r for r in expected.get(feed, [])}
        have = stored.get(feed, [])
        repeats = {run.captured_ms for prev, run in zip(have, have[1:]) if prev.content == run.content}
        report.duplicated += [f"{feed} row at {ts} repeats the content before it" for ts in sorted(repeats)]
        have_at = {r.captured_ms: r for r in have}
        for ts, run in want.items():
            got = have_at.get(ts)
            if got is None:
                report.lost.append(f"{feed} change at {ts} not stored")
            elif got.content != run.content:
                report.stale.append(f"{feed} row at {ts} holds other content")
            elif got.last_confirmed_ms < run.last_confirmed_ms:
                report.lost.append(f"{feed} sighting at {run.last_confirmed_ms} not reflected")
            elif got.last_confirmed_ms > run.last_confirmed_ms:
                report.stale.append(f"{feed} row at {ts} confirmed past its run")
        report.stale += [
            f"{feed} row at {ts} was never a change" for ts in sorted(set(have_at) - set(want) - repeats)
        ]
    return report
