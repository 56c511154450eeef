"""Postgres binary COPY payloads for the snapshots and market_versions tables, built with struct.

psycopg's generic write_row adapts every array element in Python and cost more than Postgres' own work
per changed snapshot. These rows have a fixed shape, so they are packed directly: a market's outcomes
array is packed once per set of names and remembered, and the odds go in with one struct call.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from shared.wire import MarketRow

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_TEXT_OID, _INT4_OID, _FLOAT8_OID = 25, 23, 701
_POSTGRES_EPOCH_MS = 946_684_800_000  # timestamptz counts microseconds from 2000-01-01 UTC
_TEXT_CACHE_LIMIT = 100_000

_INT4 = struct.Struct(">i")
_SNAPSHOT_ROW = struct.Struct(">hiqiqiqiqi")  # 5 fields: id, feed_id, captured_at, last_confirmed_at, fp
_VERSION_PREFIX = struct.Struct(">hiqiq")  # 5 fields, then series_id and snapshot_id
_NULL = struct.pack(">i", -1)
_GONE = _NULL * 3  # outcomes, odds and exact_odds
_ARRAY_HEADER = struct.Struct(">iiiii")  # ndim, has-nulls, element type, length, lower bound


class _LengthPrefixed(dict[str, bytes]):
    """UTF-8 text with its 4-byte length: market, specifier and outcome names repeat endlessly."""

    def __missing__(self, text: str) -> bytes:
        if len(self) >= _TEXT_CACHE_LIMIT:
            self.clear()  # unusual names cannot grow it without bound
        raw = text.encode()
        value = self[text] = _INT4.pack(len(raw)) + raw
        return value


_TEXT = _LengthPrefixed()


def snapshots_payload(rows: Iterable[tuple[int, int, int, int, bytes]]) -> bytes:
    """Rows of (id, feed_id, captured_at_ms, last_confirmed_ms, fingerprint)."""
    parts = [SIGNATURE]
    for sid, feed_id, captured_ms, last_ms, fp in rows:
        parts.append(
            _SNAPSHOT_ROW.pack(5, 8, sid, 8, feed_id, 8, _micros(captured_ms), 8, _micros(last_ms), len(fp))
        )
        parts.append(fp)
    parts.append(TRAILER)
    return b"".join(parts)


def versions_payload(rows: Iterable[tuple[int, int, MarketRow | None]]) -> bytes:
    """Rows of (series_id, snapshot_id, market content, or None for a market gone at that snapshot)."""
    parts = [SIGNATURE]
    for series_id, sid, row in rows:
        parts.append(_VERSION_PREFIX.pack(5, 8, series_id, 8, sid))
        parts.append(_GONE if row is None else _content(row))
    parts.append(TRAILER)
    return b"".join(parts)


def thousandths(odds: tuple[float, ...]) -> tuple[int, ...] | None:
    """The odds as whole thousandths when each one is exactly k/1000 as a double, else None."""
    # Odds are at least 1.0: rounding half up is enough. Builtin passes, not a loop: a changed snapshot
    # has several markets to store.
    milli = tuple(map(int, map((0.5).__add__, map((1000.0).__mul__, odds))))
    return milli if tuple(map((1000).__rtruediv__, milli)) == odds else None


def _content(row: MarketRow) -> bytes:
    n = len(row.odds)
    milli = thousandths(row.odds)
    if milli is None:
        odds = _NULL + _float8_array(row.odds)
    else:
        odds = (
            struct.pack(f">iiiiii{'ii' * n}", 20 + 8 * n, 1, 0, _INT4_OID, n, 1, *_interleave(milli)) + _NULL
        )
    return _outcomes_field(row.outcomes) + odds


def _interleave(milli: tuple[int, ...]) -> list[int]:
    args = [4] * (2 * len(milli))
    args[1::2] = milli
    return args


def _float8_array(odds: tuple[float, ...]) -> bytes:
    n = len(odds)
    args: list[float] = [8] * (2 * n)
    args[1::2] = odds
    return struct.pack(f">iiiiii{'id' * n}", 20 + 12 * n, 1, 0, _FLOAT8_OID, n, 1, *args)


class _OutcomeArrays(dict[tuple[str, ...], bytes]):
    """The outcomes field, ready to send: a market's outcome names repeat from version to version."""

    def __missing__(self, names: tuple[str, ...]) -> bytes:
        if len(self) >= _TEXT_CACHE_LIMIT:
            self.clear()  # unusual names cannot grow it without bound
        packed = b"".join(map(_TEXT.__getitem__, names))
        value = self[names] = b"".join(
            (_INT4.pack(20 + len(packed)), _ARRAY_HEADER.pack(1, 0, _TEXT_OID, len(names), 1), packed)
        )
        return value


_OUTCOME_ARRAYS = _OutcomeArrays()
_outcomes_field = _OUTCOME_ARRAYS.__getitem__


def _micros(ts_ms: int) -> int:
    return (ts_ms - _POSTGRES_EPOCH_MS) * 1000
