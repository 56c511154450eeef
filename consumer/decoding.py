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

import math
from collections import OrderedDict
from operator import itemgetter, lt
from typing import Any

import msgpack

from shared.wire import (
    CANONICAL_KEYS,
    DEFAULT_LIMITS,
    MAX_ODDS,
    DataLimits,
    Decoded,
    MarketRow,
    data_head,
    decode_data,
    fingerprint,
    pack_row,
    packed_data,
    row_key,
    shared_labels,
    unpack_limited,
)

_MARKET_KEYS = set(CANONICAL_KEYS)


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

    def __call__(self, data: bytes, *, digest: bytes | None = None) -> Decoded:
        """decode_data(data); digest is fingerprint(data), when the caller has hashed it already."""
        if digest is None:
            digest = fingerprint(data)
        decoded = self._snapshots.get(digest)
        if decoded is not None:
            self._snapshots.move_to_end(digest)
            return decoded
        try:
            decoded = self._from_markets(data, digest)
        except (ValueError, TypeError, msgpack.UnpackException):
            decoded = None  # the full decode says what is wrong
        if decoded is None:
            decoded = decode_data(data, self._limits, digest=digest)
        self._snapshots[digest] = decoded
        if len(self._snapshots) > self._snapshot_limit:
            self._snapshots.popitem(last=False)
        return decoded

    def _from_markets(self, data: bytes, digest: bytes) -> Decoded | None:
        pieces = _market_bytes(data, self._limits)
        if pieces is None:
            return None
        # One builtin pass looks every market up: a changed snapshot usually finds all but one to five.
        known = list(map(self._markets.get, pieces))
        if not all(known) and not self._learn(pieces, known):
            return None
        rows = tuple(map(_ROW, known))  # type: ignore[arg-type]  # all known now
        keys = list(map(row_key, rows))
        if all(map(lt, keys, keys[1:])):
            canonical = list(map(_CANONICAL, known))  # type: ignore[arg-type]
            if canonical == pieces and data.startswith(data_head(len(pieces))):
                return Decoded(digest, rows)  # data is canonical: its digest is its fingerprint
        else:
            order = sorted(range(len(rows)), key=keys.__getitem__)
            if any(keys[a] == keys[b] for a, b in zip(order, order[1:])):
                return None  # a market twice: refused, with its name, by the full decode
            rows = tuple(rows[i] for i in order)
            canonical = [known[i][1] for i in order]  # type: ignore[index]
        return Decoded(fingerprint(packed_data(canonical)), rows)

    def _learn(self, pieces: list[bytes], known: list[tuple[MarketRow, bytes] | None]) -> bool:
        """Decode the markets not known yet into known and remember them; False if one is unusual."""
        fresh: dict[bytes, tuple[MarketRow, bytes]] = {}
        for i, raw in enumerate(pieces):
            if known[i] is not None:
                continue
            found = fresh.get(raw) or _one_market(raw, self._limits)
            if found is None:
                return False
            known[i] = fresh[raw] = found
        if len(self._markets) + len(fresh) > self._market_limit:
            self._markets.clear()  # unusual traffic cannot grow it without bound
        self._markets.update(fresh)
        return True


_ROW = itemgetter(0)
_CANONICAL = itemgetter(1)


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


def _one_market(raw: bytes, limits: DataLimits) -> tuple[MarketRow, bytes] | None:
    """One market's row and canonical bytes, when it is a plain valid market: its three keys, text labels
    and a flat map of numeric odds, in any order. None for anything else, which the full decode judges.

    Checked in a few builtin passes, as decode_data checks a whole snapshot (checking outcome by outcome
    costs more than the rest of a changed snapshot): what passes is exactly what checked_market accepts.
    """
    market: Any = unpack_limited(raw, limits)
    if not (isinstance(market, dict) and market.keys() == _MARKET_KEYS):
        return None
    outcomes = market["outcomes"]
    # Only numbers: nested containers would count towards the document's limit, which the full decode
    # counts; a bool is no number there.
    if not (
        isinstance(outcomes, dict)
        and outcomes
        and all(map(_NUMBER_TYPES.__contains__, map(type, outcomes.values())))
    ):
        return None
    names, odds = tuple(outcomes), tuple(outcomes.values())
    # Bounds before the sum: an integer too large for a float would not even convert.
    if not (min(odds) >= 1.0 and max(odds) <= MAX_ODDS and math.isfinite(sum(odds))):
        return None
    in_order = all(map(lt, names, names[1:]))  # comparing a str with bin names raises TypeError: refused
    if not in_order:
        order = sorted(range(len(names)), key=names.__getitem__)
        names, odds = tuple(names[i] for i in order), tuple(odds[i] for i in order)
    labels = shared_labels((market["market"], market["specifier"], names))
    if labels is None:
        return None
    floats = all(map(float.__instancecheck__, odds))
    row = MarketRow(*labels, odds if floats else tuple(map(float, odds)))
    # Its own keys in canonical order, outcomes sorted, odds floats: re-encoding what was decoded gives the
    # canonical bytes without building them from the row.
    canonical_shape = in_order and floats and tuple(market) == CANONICAL_KEYS
    packed = msgpack.packb(market, use_bin_type=True) if canonical_shape else pack_row(row)
    return row, raw if packed == raw else packed


_NUMBER_TYPES = frozenset((int, float))
