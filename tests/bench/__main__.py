"""`python -m tests.bench [--quick] [--backlog N] [--cycles N] [--only-large | --only-speed]`: performance.

Consumers run as real processes, as in production. Throughput is timed on a pre-filled backlog: the
consumers are started and warmed up first (leases spread, opening lines written), then paused with SIGSTOP
while the backlog is published, and timed from SIGCONT until every entry is committed and acknowledged.
Everything lives under a unique stream prefix and a bench database, both removed at the end.
"""

from __future__ import annotations

import argparse
import sys
import time

from tests.bench.harness import Size, add_server_options
from tests.bench.report import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="200 events, a 20,000 entry RSS backlog, 50,000 distinct feeds"
    )
    parser.add_argument("--backlog", type=int, help="entries for the peak RSS run (default 1,000,000)")
    parser.add_argument(
        "--feeds", type=int, help="distinct feeds for the memory-growth run (default 1,000,000)"
    )
    parser.add_argument(
        "--cycles",
        type=int,
        default=5,
        help="cycles in each timed backlog (default 5); a longer drain shows costs that grow with it",
    )
    parser.add_argument(
        "--only-large", action="store_true", help="only the row of 5,000-market snapshots (1,200 of them)"
    )
    parser.add_argument(
        "--only-speed",
        action="store_true",
        help="only the rows against the code before and of the foreign producer",
    )
    add_server_options(parser)
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    quick = args.quick
    size = Size(
        events=200 if quick else 2000,
        backlog_cycles=args.cycles,
        latency_s=4.0 if quick else 15.0,
        rss_backlog=args.backlog or (20_000 if quick else 1_000_000),
        feeds=args.feeds or (50_000 if quick else 1_000_000),
        large_events=20 if quick else 100,
        large_cycles=2 if quick else 4,
    )
    started = time.perf_counter()
    report = run(
        args.redis_url, args.database_url, size, only_large=args.only_large, only_speed=args.only_speed
    )
    print("| Measure | Result | Alongside |")
    print("|---|---|---|")
    print("\n".join(report.lines))
    print(f"\n(bench took {time.perf_counter() - started:,.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
