"""A fault run's result row, and the table that make faults prints."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

RESULTS: list[Row] = []


@dataclass
class FaultRecord:
    name: str
    started: float
    ended: float = 0.0
    marks: dict[int, tuple[int, int]] | None = None  # shard -> last stream id at the fault's end
    recovered_s: float | None = None
    upper_bound: bool = False  # recovery known only from the final drain

    def describe(self) -> str:
        if self.recovered_s is None:
            return "-"
        return f"{'<=' if self.upper_bound else ''}{self.recovered_s:.1f}s"


@dataclass
class Row:
    fault: str
    published: int
    changes: int
    rows: int
    lost: list[str]
    duplicated: list[str]
    stale: list[str]
    dead_letters: dict[str, int]
    counters: dict[str, int]
    faults: list[FaultRecord]
    drained: bool
    drain_note: str = ""
    workdir: str = ""

    @property
    def passed(self) -> bool:
        return self.drained and not (self.lost or self.duplicated or self.stale)

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    def recovery(self) -> str:
        times = [f.recovered_s for f in self.faults if f.recovered_s is not None]
        if not times:
            return "-"
        bound = "<=" if any(f.upper_bound for f in self.faults) else ""
        return f"max {bound}{max(times):.1f}s, median {statistics.median(times):.1f}s"

    def details(self) -> str:
        first = (self.lost + self.duplicated + self.stale)[:5]
        return (
            f"{self.fault}: lost={len(self.lost)} duplicated={len(self.duplicated)} stale={len(self.stale)} "
            f"drained={self.drained} {self.drain_note}; first: {first}; dead letters {self.dead_letters}; "
            f"counters {self.counters}; logs in {self.workdir}"
        )


def processed_once(row: Row) -> int:
    """Entries acknowledged with an outcome; equals the XADDs when no entry was committed twice."""
    outcomes = ("changed", "unchanged", "stale", "duplicate", "dead_lettered")
    return sum(row.counters.get(k, 0) for k in outcomes)


HEADER = (
    "| fault | published | changes | rows | lost | duplicated | stale | dead-lettered | faults | recovery "
    "| pass |\n|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"
)


def table(rows: list[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        # Many distinct reasons would swamp the table; dead_letter_reasons() lists them in full.
        reasons = sorted(r.dead_letters.items())
        dead = "; ".join(f"{n}× {reason}" for reason, n in reasons) if len(reasons) <= 2 else ""
        dead = dead or (f"{r.dead_lettered} ({len(reasons)} reasons)" if reasons else "0")
        lines.append(
            f"| {r.fault} | {r.published} | {r.changes} | {r.rows} | {len(r.lost)} | {len(r.duplicated)} "
            f"| {len(r.stale)} | {dead} | {len(r.faults)} | {r.recovery()} | {'yes' if r.passed else 'NO'} |"
        )
    return "\n".join(lines)


def dead_letter_reasons(rows: list[Row]) -> str:
    """Every row's dead letters by reason, as a markdown list."""
    lines = []
    for r in rows:
        if r.dead_letters:
            lines.append(f"- {r.fault}:")
            lines += [f"  - {n}× {reason}" for reason, n in sorted(r.dead_letters.items())]
    return "\n".join(lines)
