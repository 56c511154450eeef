"""The README's analyst queries timed on the bench's data, with the indexes Postgres chose for them."""

from __future__ import annotations

import re
import statistics
import time

import psycopg

from tests.analyst_queries import plan_text, readme_queries
from tests.bench.harness import BOOKMAKERS
from tests.bench.storage import to_dt

REPEATS = 5
README_TIME = "timestamptz '2026-12-01 15:00+00'"


def timed_queries(
    db_url: str, event: str, first_ms: int, last_ms: int
) -> list[tuple[str, float, int, list[str]]]:
    """Per query: median ms of REPEATS runs, rows, and the indexes in its plan.

    The README's literals are swapped for the bench's: its first event and bookmaker, a time halfway
    through the backlog, and "now" at the bench's last capture (its captures are an hour in the past).
    """
    middle, last = to_dt((first_ms + last_ms) // 2), to_dt(last_ms)
    results = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        for name, sql in readme_queries().items():
            sql = (
                sql.replace("'sr:match:1'", f"'{event}'")
                .replace("'bet9ja'", f"'{BOOKMAKERS[0]}'")
                .replace(README_TIME, f"timestamptz '{middle.isoformat()}'")
                .replace("now()", f"timestamptz '{last.isoformat()}'")
            )
            spent = []
            rows = 0
            for _ in range(REPEATS):
                start = time.perf_counter()
                rows = len(conn.execute(sql).fetchall())
                spent.append(time.perf_counter() - start)
            indexes = sorted(set(re.findall(r"(?:using|Index Scan on) (\w+)", plan_text(conn, sql))))
            results.append((name, statistics.median(spent) * 1000, rows, indexes))
    return results
