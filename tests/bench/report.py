"""The bench's run: every measurement in turn, as rows of the table `python -m tests.bench` prints."""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field

from tests.bench import measures
from tests.bench.harness import BOOKMAKERS, MARKETS, SEED, Bench, Size, bench
from tests.bench.large import large_snapshots
from tests.bench.measures import RunResult
from tests.bench.queries import timed_queries
from tests.bench.scale_rows import scale_rows
from tests.bench.storage import full_write_bytes
from tests.large_snapshots import MARKETS as LARGE_MARKETS
from tests.old_checkout import NoHistory, commit_before, export

RATES = (0.0, 0.2, 1.0)
PREVIOUS_PAIRS = 3


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def row(self, what: str, value: str, note: str = "") -> None:
        self.lines.append(f"| {what} | {value} | {note} |")


def run(
    redis_url: str, database_url: str, size: Size, only_large: bool = False, only_speed: bool = False
) -> Report:
    report = Report()
    if only_large or only_speed:
        with bench(redis_url, database_url, size) as b:
            if only_large:
                large_row(b, report)
            else:
                previous_rows(b, report)
                foreign_rows(b, report)
        return report
    per_cycle = size.events * len(BOOKMAKERS)
    say(
        f"workload: {size.events} events x {len(BOOKMAKERS)} bookmakers x {MARKETS} markets = {per_cycle} "
        f"snapshots per cycle, {size.backlog_cycles} cycles per backlog, seed {SEED}"
    )
    with bench(redis_url, database_url, size) as b:
        say("producer publish rate ...")
        published, raw, ratio = measures.publish_rates(b)
        report.row(
            "Producer publish rate (publish_cycle)",
            f"{published:,.0f}/s",
            f"raw pipelined XADD of the same bytes {raw:,.0f}/s; ratio {ratio:.0%} "
            f"(median of {measures.PUBLISH_PAIRS} cycles, each published then sent raw)",
        )
        say("producer cycle time, consumer and Postgres stalled ...")
        normal_s, stalled_s = measures.producer_under_stall(b)
        report.row(
            f"Producer cycle time ({per_cycle} snapshots)",
            f"{normal_s * 1000:.0f} ms normal",
            f"{stalled_s * 1000:.0f} ms with the consumer stopped and Postgres locked",
        )
        runs: dict[tuple[float, int], RunResult] = {}
        for rate in RATES:
            for consumers in (1, 2):
                say(f"throughput at {rate:.0%} change, {consumers} consumer(s) ...")
                runs[rate, consumers] = measures.throughput(b, rate, consumers)
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
        bytes_per_full = full_write_bytes(b, full.first_cycle)
        for (rate, consumers), r in sorted(runs.items()):
            right = (
                r.snapshot_rows == r.changes.snapshots == r.stats.get("changed", 0)
                and r.market_rows == r.changes.markets
            )
            ok &= right
            if consumers == 1:
                per_k = 1000 / r.snapshots
                everything = bytes_per_full * r.snapshots
                report.row(
                    f"Postgres writes per 1,000 snapshots, {rate:.0%} change",
                    f"{(r.snapshot_rows + r.market_rows) * per_k:,.0f} rows inserted, "
                    f"{r.updated_rows * per_k:,.0f} updated ({r.hot_updates * per_k:,.0f} HOT)",
                    f"{r.table_bytes * per_k / 1024:,.0f} kB = {r.table_bytes / everything:.1%} of "
                    f"writing every snapshot in full ({1 + MARKETS:,}k rows, "
                    f"{bytes_per_full * 1000 / 1024:,.0f} kB, measured in this run)",
                )
                if r.changes.prices:
                    report.row(
                        f"Bytes per stored change, {rate:.0%} change",
                        f"{r.table_bytes / r.changes.prices:,.0f} B per price change",
                        f"{r.table_bytes / r.changes.markets:,.0f} B per changed market, "
                        f"{r.table_bytes / r.changes.snapshots:,.0f} B per changed snapshot "
                        f"({r.changes.markets / r.changes.snapshots:.1f} markets, "
                        f"{r.changes.prices / r.changes.snapshots:.1f} prices each)",
                    )
            say(
                f"  rows check {rate:.0%}/{consumers}: snapshot rows {r.snapshot_rows}, expected changes "
                f"{r.changes.snapshots}, consumer 'changed' {r.stats.get('changed', 0)}, market rows "
                f"{r.market_rows}, changed markets {r.changes.markets} -> {'OK' if right else 'MISMATCH'}"
            )
        report.row(
            "Snapshot rows = changes, market rows = changed markets",
            "yes" if ok else "NO: see the rows check above",
            "checked in every run against the simulator's own changes",
        )
        # The tables now hold the last throughput run's data: 100 % change, two consumers.
        last = runs[1.0, 2]
        for name, ms, rows, indexes in timed_queries(b.db_url, last.first_cycle[0].event, *last.span_ms):
            report.row(
                f"Analyst query: {name}",
                f"{ms:,.1f} ms",
                f"median of 5, {rows:,} rows, on the tables of the 100 % run; indexes: {', '.join(indexes)}",
            )
        previous_rows(b, report)
        foreign_rows(b, report)
        half = runs[0.2, 1].per_s / 2
        say(f"latency at {half:,.0f} snapshots/s ...")
        p50, p99, n = measures.latency(b, half)
        report.row(
            f"Latency XADD to commit+XACK at {half:,.0f}/s (20 % change)",
            f"p50 {p50} ms",
            f"p99 {p99} ms over {n:,} entries",
        )
        say(f"peak RSS with a {size.rss_backlog:,} entry backlog ...")
        peak_kb, drain = measures.peak_rss(b, size.rss_backlog)
        report.row(
            f"Consumer peak RSS, {size.rss_backlog:,} entry backlog",
            f"{peak_kb / 1024:,.0f} MB",
            f"drained at {drain:,.0f}/s (20 % change, trimming on)",
        )
        say(f"consumer RSS and fingerprints after {size.feeds:,} distinct feeds ...")
        peak_kb, fp_bytes, fields, sweep_s, left = measures.many_feeds(b, size.feeds)
        report.row(
            f"{size.feeds:,} distinct feeds, one consumer",
            f"{peak_kb / 1024:,.0f} MB peak RSS",
            f"fingerprints {fp_bytes / 1_048_576:,.0f} MB in Redis for {fields:,} feeds "
            f"({fp_bytes / max(1, fields):,.0f} B each); one expiry pass {sweep_s:,.1f} s, {left:,} left",
        )
        large_row(b, report)
        say("scale: 1, 2 and 4 consumers on one server and on a local cluster ...")
        for row in scale_rows(b, database_url, size):
            report.row(*row)
    return report


def previous_rows(b: Bench, report: Report) -> None:
    """One consumer of the code before per-market versions against this one, in interleaved pairs."""
    try:
        commit = commit_before()
    except NoHistory as exc:
        report.row("One consumer against the code before per-market versions", "not measured", str(exc))
        return
    root = export(commit, b.tmp / "previous")
    with bench(b.redis_url, b.admin_url, b.size, root, "_prev") as old:
        for rate in (1.0, 0.2):
            before, after = [], []
            for pair in range(PREVIOUS_PAIRS):
                say(f"previous code against this one at {rate:.0%} change, pair {pair + 1} ...")
                before.append(measures.throughput(old, rate, 1, with_yardstick=False).per_s)
                after.append(measures.throughput(b, rate, 1, with_yardstick=False).per_s)
            now, then = statistics.median(after), statistics.median(before)
            report.row(
                f"One consumer, {rate:.0%} change, against the code before",
                f"{now:,.0f}/s = {now / then:.2f}x",
                f"{then:,.0f}/s with commit {commit[:10]} from a second checkout; medians of "
                f"{PREVIOUS_PAIRS} interleaved pairs (now {_listed(after)}; before {_listed(before)})",
            )


def foreign_rows(b: Bench, report: Report) -> None:
    """A producer of stable but non-canonical bytes against this project's producer, interleaved pairs."""
    for rate in (0.0, 0.2):
        canonical, foreign = [], []
        right = True
        for pair in range(PREVIOUS_PAIRS):
            say(f"foreign producer against canonical bytes at {rate:.0%} change, pair {pair + 1} ...")
            for runs, is_foreign in ((canonical, False), (foreign, True)):
                r = measures.throughput(b, rate, 1, with_yardstick=False, foreign=is_foreign)
                right &= r.snapshot_rows == r.changes.snapshots and r.market_rows == r.changes.markets
                runs.append(r.per_s)
        ours, theirs = statistics.median(canonical), statistics.median(foreign)
        report.row(
            f"Foreign producer, {rate:.0%} change, one consumer",
            f"{theirs:,.0f}/s = {theirs / ours:.0%} of canonical",
            f"canonical bytes {ours:,.0f}/s; medians of {PREVIOUS_PAIRS} interleaved pairs (foreign "
            f"{_listed(foreign)}; canonical {_listed(canonical)}); "
            f"rows = changes and changed markets: {'yes' if right else 'NO'}",
        )


def large_row(b: Bench, report: Report) -> None:
    entries = b.size.large_events * len(BOOKMAKERS) * b.size.large_cycles
    say(f"{entries:,} snapshots of {LARGE_MARKETS:,} markets ...")
    total, rate, peak_kb, stored = large_snapshots(b, b.size.large_events, b.size.large_cycles)
    report.row(
        f"{LARGE_MARKETS:,}-market snapshots (420 kB each), one consumer",
        f"{rate:,.1f}/s ({rate * LARGE_MARKETS:,.0f} markets/s)",
        f"peak RSS {peak_kb / 1024:,.0f} MB through {total:,} entries; rows = changes and changed markets: "
        f"{'yes' if stored else 'NO'}",
    )


def _listed(rates: list[float]) -> str:
    return ", ".join(f"{x:,.0f}" for x in rates)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
