"""Decoding that reuses what earlier snapshots decoded, whatever byte order their producer uses.

A scraper sends the same bytes for the same content, canonical or not: the project's producer sends
canonical msgpack, a JavaScript or Go scraper may keep the bookmaker's order of outcomes or send 3 as an
integer. So two things are remembered, both keyed by raw bytes and so never wrong, only absent:

- each payload's decoded content, by the digest of its bytes: an unchanged snapshot from any producer is
  not decoded again (canonical ones never even get here: their digest equals the stored fingerprint);
- each market's decoded row and canonical bytes, by the market's own bytes, which msgpack's Unpacker
  finds by skipping values without building them: a changed snapshot decodes only the markets whose bytes
  are new, usually the one to five that moved.

Whatever is unusual (another top-level key, a market with extra fields, an invalid value, a market twice)
goes to shared.wire.decode_data, which accepts and rejects exactly as before and says what is wrong. The
shortcut only ever returns what decode_data would return.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from operator import lt
from typing import Any

import msgpack

from shared.wire import (
    DEFAULT_LIMITS,
    DataLimits,
    Decoded,
    InvalidEntry,
    MarketRow,
    checked_market,
    decode_data,
    fingerprint,
    pack_row,
    packed_data,
    unpack_limited,
)

_MARKET_KEYS = {"market", "specifier", "outcomes"}


class ReusingDecoder:
    # markets: decoded market rows kept (ODDS_MARKET_CACHE; 400,000, the current markets of 10,000 feeds
    # of 40, is about 170 MB at the limit). The default snapshots hold the payloads of a few batches' worth
    # of feeds.
    def __init__(self, markets: int, limits: DataLimits = DEFAULT_LIMITS, snapshots: int = 50_000):
        self._limits = limits
        self._snapshot_limit = snapshots
        self._market_limit = markets
        self._snapshots: OrderedDict[bytes, Decoded] = OrderedDict()
        self._markets: dict[bytes, tuple[MarketRow, bytes]] = {}

    def __call__(self, data: bytes) -> Decoded:
        digest = fingerprint(data)
        decoded = self._snapshots.get(digest)
        if decoded is not None:
            self._snapshots.move_to_end(digest)
            return decoded
        try:
            decoded = self._from_markets(data)
        except (ValueError, TypeError, msgpack.UnpackException):
            decoded = None  # the full decode says what is wrong
        if decoded is None:
            decoded = decode_data(data, self._limits)
        self._snapshots[digest] = decoded
        if len(self._snapshots) > self._snapshot_limit:
            self._snapshots.popitem(last=False)
        return decoded

    def _from_markets(self, data: bytes) -> Decoded | None:
        pieces = _market_bytes(data, self._limits)
        if pieces is None:
            return None
        rows: list[MarketRow] = []
        canonical: list[bytes] = []
        fresh: dict[bytes, tuple[MarketRow, bytes]] = {}
        for raw in pieces:
            known = self._markets.get(raw) or fresh.get(raw)
            if known is None:
                row = _one_market(raw, self._limits)
                if row is None:
                    return None
                packed = pack_row(row)
                known = fresh[raw] = (row, raw if packed == raw else packed)
            rows.append(known[0])
            canonical.append(known[1])
        keys = [(r.market, r.specifier) for r in rows]
        if not all(map(lt, keys, keys[1:])):
            order = sorted(range(len(rows)), key=keys.__getitem__)
            if any(keys[a] == keys[b] for a, b in zip(order, order[1:])):
                return None  # a market twice: refused, with its name, by the full decode
            rows = [rows[i] for i in order]
            canonical = [canonical[i] for i in order]
        if len(self._markets) + len(fresh) > self._market_limit:
            self._markets.clear()  # unusual traffic cannot grow it without bound
        self._markets.update(fresh)
        return Decoded(fingerprint(packed_data(canonical)), tuple(rows))


def _market_bytes(data: bytes, limits: DataLimits) -> list[bytes] | None:
    """The raw bytes of each market of {"markets": [...]}, found by skipping; None for any other shape."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)))
    unpacker.feed(data)
    if unpacker.read_map_header() != 1 or unpacker.unpack() != "markets":
        return None
    count = unpacker.read_array_header()
    if count > limits.max_markets:
        return None
    pieces = []
    start = unpacker.tell()
    for _ in range(count):
        unpacker.skip()
        end = unpacker.tell()
        pieces.append(data[start:end])
        start = end
    return pieces if start == len(data) else None  # trailing bytes: refused by the full decode


def _one_market(raw: bytes, limits: DataLimits) -> MarketRow | None:
    """One market's row, when it is a plain valid market: its three keys and a flat map of odds."""
    market: Any = unpack_limited(raw, limits)
    if not (isinstance(market, dict) and market.keys() == _MARKET_KEYS):
        return None
    outcomes = market["outcomes"]
    if not isinstance(outcomes, dict) or not all(isinstance(v, int | float) for v in outcomes.values()):
        return None  # nested containers would count towards the document's limit: the full decode counts
    try:
        row = checked_market(0, market)
    except InvalidEntry:
        return None  # the full decode gives the reason with the market's index
    # Remembered rows share their names: a market's labels repeat in every version of it.
    if len(_NAMES) >= _NAMES_LIMIT:
        _NAMES.clear()
    names = _NAMES.setdefault(row.outcomes, row.outcomes)
    return MarketRow(sys.intern(row.market), sys.intern(row.specifier), names, row.odds)


_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_NAMES_LIMIT = 100_000
