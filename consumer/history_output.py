"""Odds history as text: an aligned table for people, CSV for spreadsheets and scripts."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from consumer.history import HistoryRow

COLUMNS = HistoryRow._fields
_RIGHT_ALIGNED = {"odds"}


def table(rows: Sequence[HistoryRow]) -> str:
    """Columns as wide as their widest cell; times in UTC to the millisecond."""
    cells = [list(COLUMNS), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if name in _RIGHT_ALIGNED else text.ljust(width)
            for name, text, width in zip(COLUMNS, line, widths, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def write_csv(rows: Iterable[HistoryRow], out: TextIO, on_row: Callable[[int], None] | None = None) -> int:
    """Header and one line per row, times in ISO 8601 with their offset; returns the rows written.

    on_row(count) is called after each row, for a progress line.
    """
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow([value.isoformat() if isinstance(value, dt.datetime) else value for value in row])
        count += 1
        if on_row is not None:
            on_row(count)
    return count


def _cell(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, float):
        return f"{value:.2f}" if value == round(value, 2) else repr(value)
    return str(value)
