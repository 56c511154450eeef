"""One event's odds history, read through the `odds_history` view only.

The view is the documented contract for analysts (README, "History, for analysts"): the tables under it
may change, its columns do not.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import psycopg

FETCH_ROWS = 5000  # rows per round trip of the server-side cursor: an event's history can be large
_RELATIVE = re.compile(r"(\d+)\s*([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class HistoryRow(NamedTuple):
    bookmaker: str
    market: str
    specifier: str
    outcome: str
    odds: float
    captured_at: dt.datetime
    last_confirmed_at: dt.datetime


@dataclass(frozen=True)
class HistoryQuery:
    event: str
    bookmaker: str | None = None
    market: str | None = None
    specifier: str | None = None
    # Rows still in force at or after this time: confirmed last at it or later.
    since: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.specifier is not None and self.market is None:
            raise ValueError("--specifier needs --market: a specifier means something only within its market")

    def equalities(self) -> list[tuple[str, str]]:
        """The view's columns this query pins to one value."""
        pinned = (("bookmaker", self.bookmaker), ("market", self.market), ("specifier", self.specifier))
        return [(column, value) for column, value in pinned if value is not None]

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = ["event = %s"]
        params: list[Any] = [self.event]
        for column, value in self.equalities():
            where.append(f"{column} = %s")
            params.append(value)
        if self.since is not None:
            where.append("last_confirmed_at >= %s")
            params.append(self.since)
        text = (
            "SELECT bookmaker, market, specifier, outcome, odds, captured_at, last_confirmed_at "
            f"FROM odds_history WHERE {' AND '.join(where)} "
            "ORDER BY market, specifier, outcome, bookmaker, captured_at"
        )
        return text, params

    def describe(self) -> str:
        parts = [f"event {self.event!r}", *(f"{column} {value!r}" for column, value in self.equalities())]
        if self.since is not None:
            parts.append(f"since {self.since.isoformat()}")
        return ", ".join(parts)


def fetch(conn: psycopg.Connection[Any], query: HistoryQuery) -> Iterator[HistoryRow]:
    """The history rows in order, streamed from a server-side cursor so memory does not grow with them."""
    text, params = query.sql()
    with conn.transaction(), conn.cursor(name="odds_history") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(text, params)
        for row in cursor:
            yield HistoryRow(*row)


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (UTC when it names no zone), or a span back from now: 90s, 30m, 6h, 2d."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        now = now or dt.datetime.now(dt.UTC)
        return now - dt.timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give an ISO 8601 time (2026-11-24T10:00) or a span such as 30m, 6h, 2d"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
