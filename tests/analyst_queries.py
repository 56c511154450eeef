"""The analysts' queries as the README documents them: the test and the bench run that very SQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

README = Path(__file__).resolve().parents[1] / "README.md"
NAMES = ("outcome history", "opening and closing", "best price", "moved lately")


def readme_queries() -> dict[str, str]:
    """Each ```sql block of the README that starts with `-- query: NAME`, by name."""
    blocks = re.findall(r"```sql\n-- query: ([^\n]+)\n(.*?)```", README.read_text(), re.S)
    queries = {name: sql.strip().rstrip(";") for name, sql in blocks}
    assert set(queries) == set(NAMES), f"the README's analyst queries are {sorted(queries)}"
    return queries


def plan_text(conn: psycopg.Connection[Any], sql: str) -> str:
    """The EXPLAIN of a query, as text."""
    rows = conn.execute(f"EXPLAIN {sql}").fetchall()
    return "\n".join(str(r[0]) for r in rows)
