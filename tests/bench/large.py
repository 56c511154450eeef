"""The bench row for snapshots of 5,000 markets: how fast one consumer drains them, and its peak memory.

A consumer bounds each read by bytes and each transaction by rows, so its memory follows the batch limits,
not the size of the entries or of the backlog.
"""

from __future__ import annotations

import time

import psycopg

from producer.publisher import Publisher
from tests.bench.harness import BOOKMAKERS, Bench
from tests.bench.measures import vm_hwm_kb
from tests.bench.storage import count_changes
from tests.large_snapshots import LargeBook


def large_snapshots(b: Bench, events: int, cycles: int) -> tuple[int, float, int, bool]:
    """Entries drained, snapshots per second, the consumer's peak RSS (kB), and whether every snapshot
    became a row with a version of each market it changed (all 5,000 in the first cycle, as every market
    appears; then each cycle moves one market of every feed)."""
    b.reset_database()
    stream, keys = b.new_stream("large")
    book = LargeBook(events, BOOKMAKERS)
    publisher = Publisher(b.client, keys)
    total = 0
    published = []
    for _ in range(cycles):
        snapshots = book.cycle(b.next_ts())
        publisher.publish_cycle(snapshots)
        total += len(snapshots)
        published.append(snapshots)
    procs = b.start_consumers(stream, 1, ODDS_TRIM_INTERVAL_S="5")
    start = time.perf_counter()
    end = b.wait_drained(keys, total)
    peak = vm_hwm_kb(procs[0].pid)
    b.stop(procs)
    with psycopg.connect(b.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM snapshots), (SELECT count(*) FROM market_versions)"
        ).fetchone()
    changes = count_changes([], published)
    stored = row == (changes.snapshots, changes.markets) and changes.snapshots == total
    return total, total / (end - start), peak, stored
