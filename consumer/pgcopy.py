"""Postgres binary COPY payloads for the snapshots and markets tables, built with struct.

psycopg's generic write_row adapts every array element in Python and cost more than Postgres' own work
per changed snapshot. These rows have a fixed shape, so they are packed directly: everything but the odds
is packed once per market layout and remembered, and the odds go in with one struct call.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

from shared.wire import MarketRow

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_TEXT_OID, _FLOAT8_OID = 25, 701
_POSTGRES_EPOCH_MS = 946_684_800_000  # timestamptz counts microseconds from 2000-01-01 UTC
_TEXT_CACHE_LIMIT = 100_000

_INT4 = struct.Struct(">i")
_SNAPSHOT_ROW = struct.Struct(">hiqiqiqiqi")  # 5 fields: id, feed_id, captured_at, last_confirmed_at, fp
_MARKET_PREFIX = struct.Struct(">hiq")  # 5 fields, then snapshot_id
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


def markets_payload(rows: Iterable[tuple[int, tuple[MarketRow, ...]]]) -> bytes:
    """Rows of (snapshot_id, markets): one COPY row per market."""
    parts = [SIGNATURE]
    for sid, markets in rows:
        prefix = _MARKET_PREFIX.pack(5, 8, sid)
        for market in markets:
            parts.append(prefix)
            parts.append(_market_fields(market))
    parts.append(TRAILER)
    return b"".join(parts)


def _market_fields(market: MarketRow) -> bytes:
    layout = _LAYOUTS.get((market.market, market.specifier, market.outcomes)) or _new_layout(market)
    args = layout.odds_args.copy()
    args[_FIRST_ODDS::2] = market.odds
    return layout.labels + layout.pack_odds(*args)


class _Layout(NamedTuple):
    """What a market's row shares with every other row of the same labels: all but the odds values."""

    labels: bytes  # market, specifier and the outcomes array, length-prefixed, ready to send
    pack_odds: Callable[..., bytes]  # packs the odds field: its length, array header, each element
    odds_args: list[float]  # the arguments of pack_odds, with 8 (each element's length) before each odds


# The odds field is length, ndim, has-nulls, element type, count, lower bound, then (8, value) per element.
_FIRST_ODDS = 7
_LAYOUTS: dict[tuple[str, str, tuple[str, ...]], _Layout] = {}
_LAYOUT_LIMIT = 10_000


def _new_layout(market: MarketRow) -> _Layout:
    """Build and remember the layout of a market's labels: they repeat endlessly, only odds move."""
    if len(_LAYOUTS) >= _LAYOUT_LIMIT:
        _LAYOUTS.clear()  # unusual labels cannot grow it without bound
    n = len(market.outcomes)
    names = b"".join(map(_TEXT.__getitem__, market.outcomes))
    labels = b"".join(
        (
            _TEXT[market.market],
            _TEXT[market.specifier],
            _INT4.pack(20 + len(names)),
            _ARRAY_HEADER.pack(1, 0, _TEXT_OID, n, 1),
            names,
        )
    )
    header = [20 + 12 * n, 1, 0, _FLOAT8_OID, n, 1]
    layout = _Layout(labels, struct.Struct(">iiiiii" + "id" * n).pack, [*header, *([8] * (2 * n))])
    _LAYOUTS[(market.market, market.specifier, market.outcomes)] = layout
    return layout


def _micros(ts_ms: int) -> int:
    return (ts_ms - _POSTGRES_EPOCH_MS) * 1000
