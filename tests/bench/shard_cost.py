"""`python -m tests.bench.shard_cost [--pairs 3]`: what more shards cost one consumer process.

The throughput measure of `make bench` (a 30,000-entry backlog at 20 % change, one consumer process,
timed from its release until every entry is committed and acknowledged), on 4 shards and on 16 in turn,
pair by pair, so that the machine's drift falls on both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from tests.bench import measures
from tests.bench.harness import Size, add_server_options, bench

SHARD_COUNTS = (4, 16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.shard_cost", description=__doc__)
    parser.add_argument("--pairs", type=int, default=3)
    add_server_options(parser)
    args = parser.parse_args(argv)
    size = Size(
        events=2000, backlog_cycles=5, latency_s=1, rss_backlog=1, feeds=1, large_events=1, large_cycles=1
    )
    rates: dict[int, list[float]] = {n: [] for n in SHARD_COUNTS}
    with bench(args.redis_url, args.database_url, size) as b:
        for pair in range(args.pairs):
            for shards in SHARD_COUNTS:
                b.shards = shards
                rates[shards].append(measures.throughput(b, 0.2, 1).per_s)
            few, many = (rates[n][-1] for n in SHARD_COUNTS)
            print(f"pair {pair + 1}: 4 shards {few:,.0f}/s, 16 shards {many:,.0f}/s, ratio {many / few:.2f}")
    few, many = (statistics.median(rates[n]) for n in SHARD_COUNTS)
    ratios = [b / a for a, b in zip(*(rates[n] for n in SHARD_COUNTS), strict=True)]
    print(
        f"median: 4 shards {few:,.0f}/s, 16 shards {many:,.0f}/s; median ratio of the pairs "
        f"{statistics.median(ratios):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
