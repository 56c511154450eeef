"""Decoding that reuses each feed's last decode, whatever byte order its producer uses.

A scraper sends the same bytes for the same content, canonical or not: the project's producer sends
canonical msgpack, a JavaScript or Go scraper may keep the bookmaker's order of outcomes or send 3 as an
integer. So each feed's last payload is remembered with where each of its markets lies, and a new payload
of the feed is compared with it. What is remembered is keyed by raw bytes and so is never wrong, only
absent:

- the same payload again (its digest) is not decoded at all, from any producer (canonical ones never even
  get here: their digest equals the stored fingerprint);
- a payload of the same length and head is a revision: a line move changes odds, which float64 keeps at
  9 bytes each, so every market stays where it was. The two payloads are XORed as big integers, which
  shows the markets whose bytes differ, and only those are decoded, usually the one to five that moved;
  one whose bytes match the template of its labels and shape is read with one struct call
  (consumer/odds_holes.py). A market decodes as one whole msgpack value or the payload takes the next
  path, so the places are proven, not assumed;
- any other payload is split with msgpack's Unpacker, which skips values without building them, and only
  markets whose bytes the feed's last payload did not have are decoded.

A revision also says which markets it changes against the last decode, so that the planner, when the
feed's stored markets are that decode's, takes the changes instead of comparing forty markets.

Whatever is unusual (another top-level key, a market with extra fields, an invalid value, a market twice)
goes to shared.wire_data.decode_data, which accepts and rejects exactly as before and says what is wrong. The
shortcuts only ever return what decode_data would return.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter, lt
from typing import Any

import msgpack

from consumer.odds_holes import OddsHoles, Shape
from consumer.plan import Change, Keyed, MarketKey, Parsed
from shared.wire import (
    CANONICAL_KEYS,
    DEFAULT_LIMITS,
    MAX_ODDS,
    DataLimits,
    Decoded,
    MarketRow,
    data_head,
    fingerprint,
    pack_row,
    packed_data,
    row_key,
)
from shared.wire_data import decode_data, shared_labels, unpack_limited

_MARKET_KEYS = set(CANONICAL_KEYS)
_PLACES_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class _Places:
    """Where the markets of a payload lie: feeds of one catalogue share them."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    slices: tuple[slice, ...]


@dataclass(slots=True)
class _Layout:
    """A payload's markets, where they lie and what each one decoded to, in the payload's own order."""

    size: int
    places: _Places
    number: int  # the payload as a big-endian integer: XOR with the next one shows where that one differs
    rows: list[MarketRow]
    shapes: list[Shape]  # each market's order of keys and outcomes, when not canonical
    canonical: list[bytes]  # each market's canonical bytes: the piece itself when it is canonical
    order: list[int] | None  # the places in canonical order; None when the payload has that order
    is_canonical: bool
    after: dict[MarketKey, MarketRow]  # the decoded markets by key, in canonical order


Found = tuple[Decoded, _Layout]  # what a shortcut decoded, and the layout the feed's next payload meets


@dataclass(slots=True)
class _Last:
    digest: bytes
    decoded: Decoded
    layout: _Layout | None  # None for a payload only the full decode read


class ReusingDecoder:
    # markets: the markets of the feeds' last payloads kept (ODDS_MARKET_CACHE; 400,000 is the payloads of
    # 10,000 feeds of 40 markets); beyond it the least recently decoded feeds are forgotten.
    def __init__(self, markets: int, limits: DataLimits = DEFAULT_LIMITS):
        self._limits = limits
        self._holes = OddsHoles()
        self._market_limit = markets
        self._markets = 0
        self._feeds: OrderedDict[str, _Last] = OrderedDict()
        self._places: dict[tuple[int, tuple[int, ...]], _Places] = {}

    def __call__(self, p: Parsed) -> Decoded:
        return self.decode(p.envelope.data, digest=p.digest, feed=p.feed)

    def decode(self, data: bytes, *, digest: bytes | None = None, feed: str = "") -> Decoded:
        """decode_data(data); digest is fingerprint(data), when the caller has hashed it already; feed is
        whose payload this is: the next payload of that feed is compared with it."""
        if digest is None:
            digest = fingerprint(data)
        last = self._feeds.get(feed)
        if last is not None and last.digest == digest:
            self._feeds.move_to_end(feed)
            return last.decoded
        layout = last.layout if last is not None else None
        found = None
        # A head that differs (another count of markets) shows in the XOR too, and is no revision.
        if layout is not None and layout.size == len(data):
            found = _unless_unusual(self._revise, data, digest, layout)
        if found is None:
            found = _unless_unusual(self._split, data, digest, layout)
        if found is None:  # the full decode says what is wrong, or reads what is unusual
            decoded = decode_data(data, self._limits, digest=digest)
            self._remember(feed, _Last(digest, decoded, None))
            return decoded
        self._remember(feed, _Last(digest, *found))
        return found[0]

    def _revise(self, data: bytes, digest: bytes, was: _Layout) -> Found | None:
        """The payload as a revision of the feed's last one, or None when a market is not where it was."""
        number = int.from_bytes(data, "big")
        moved = _places_that_differ(number ^ was.number, len(data), was.places)
        if moved is None:
            return None
        rows, canonical, shapes = was.rows.copy(), was.canonical.copy(), was.shapes
        is_canonical = was.is_canonical
        after = was.after.copy()  # keys in canonical order, as before: only rows are replaced
        changes: list[Change] = []
        for i in moved:
            old, raw = rows[i], data[was.places.slices[i]]
            key = row_key(old)
            template = self._holes.template(old[:3], shapes[i])
            odds = template.odds(raw)
            if odds is not None and min(odds) >= 1.0 and max(odds) <= MAX_ODDS and math.isfinite(sum(odds)):
                row = MarketRow(old.market, old.specifier, old.outcomes, odds)
                canonical[i] = raw if template.canonical else pack_row(row)
                is_canonical = is_canonical and template.canonical
            else:
                found = _one_market(raw, self._limits)
                if found is None or row_key(found[0]) != key:
                    return None  # another market in its place, or an unusual one
                row, canonical[i], shape = found
                if shape != shapes[i]:
                    shapes = shapes.copy() if shapes is was.shapes else shapes
                    shapes[i] = shape
                is_canonical = is_canonical and canonical[i] is raw
            rows[i] = after[key] = row
            if row != old:
                changes.append((key, row))
        if was.order is None:
            markets = tuple(rows)
        else:
            markets = tuple(map(rows.__getitem__, was.order))
            changes.sort(key=_change_key)
        fp = digest if is_canonical else fingerprint(packed_data(_in_order(canonical, was.order)))
        layout = _Layout(
            len(data), was.places, number, rows, shapes, canonical, was.order, is_canonical, after
        )
        return Keyed(fp, markets, after, was.after, tuple(changes)), layout

    def _split(self, data: bytes, digest: bytes, was: _Layout | None) -> Found | None:
        """Decode by splitting; a market the feed's last payload had is not decoded again."""
        split = _market_bytes(data, self._limits)
        if split is None:
            return None
        head, ends = split
        places = self._places_of(len(head), ends)
        pieces = list(map(data.__getitem__, places.slices))
        known: dict[bytes, tuple[MarketRow, bytes, Shape]] = {}
        if was is not None:
            before = was.number.to_bytes(was.size, "big")
            found_before = zip(was.rows, was.canonical, was.shapes)
            known = dict(zip(map(before.__getitem__, was.places.slices), found_before))
        rows, canonical, shapes = [], [], []
        for raw in pieces:
            found = known.get(raw) or _one_market(raw, self._limits)
            if found is None:
                return None
            rows.append(found[0])
            canonical.append(found[1])
            shapes.append(found[2])
        keys = list(map(row_key, rows))
        order: list[int] | None = None
        if not all(map(lt, keys, keys[1:])):
            order = sorted(range(len(rows)), key=keys.__getitem__)
            if any(keys[a] == keys[b] for a, b in zip(order, order[1:])):
                return None  # a market twice: refused, with its name, by the full decode
        is_canonical = (
            order is None and head == data_head(len(pieces)) and all(map(bytes.__eq__, canonical, pieces))
        )
        markets = tuple(rows) if order is None else tuple(map(rows.__getitem__, order))
        fp = digest if is_canonical else fingerprint(packed_data(_in_order(canonical, order)))
        after = dict(zip(map(row_key, markets), markets))
        number = int.from_bytes(data, "big")
        layout = _Layout(len(data), places, number, rows, shapes, canonical, order, is_canonical, after)
        return Keyed(fp, markets, after), layout

    def _places_of(self, start: int, ends: tuple[int, ...]) -> _Places:
        places = self._places.get((start, ends))
        if places is None:
            if len(self._places) >= _PLACES_LIMIT:
                self._places.clear()  # unusual layouts cannot grow it without bound
            starts = (start, *ends[:-1])
            places = self._places[start, ends] = _Places(starts, ends, tuple(map(slice, starts, ends)))
        return places

    def _remember(self, feed: str, last: _Last) -> None:
        old = self._feeds.pop(feed, None)
        if old is not None:
            self._markets -= len(old.decoded.markets)
        self._feeds[feed] = last
        self._markets += len(last.decoded.markets)
        while self._markets > self._market_limit and len(self._feeds) > 1:
            _, evicted = self._feeds.popitem(last=False)
            self._markets -= len(evicted.decoded.markets)


_change_key = itemgetter(0)


def _unless_unusual(
    path: Callable[[bytes, bytes, Any], Found | None], data: bytes, digest: bytes, layout: _Layout | None
) -> Found | None:
    """What a shortcut found, or None where it found something unusual: msgpack and the checks raise a
    zoo of types on bytes that are not what they expect, such as a market that is not a whole value."""
    try:
        return path(data, digest, layout)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _places_that_differ(xor: int, size: int, places: _Places) -> list[int] | None:
    """The places, in order, of the markets in which two payloads of this size and these places differ,
    given the XOR of the two as big-endian integers; None when they differ outside every market.

    Found from the last difference backwards, one market at a time, in a few big-integer operations each:
    comparing forty markets' bytes one by one cost more than decoding the one that moved.
    """
    moved: list[int] = []
    end = size  # xor holds the bytes before end, the last of them in its lowest bits
    while xor:
        byte = end - 1 - ((xor & -xor).bit_length() - 1) // 8  # the last byte that differs
        i = bisect_right(places.ends, byte)
        if i == len(places.ends) or byte < places.starts[i]:
            return None  # in the head, before the first market
        moved.append(i)
        xor >>= 8 * (end - places.starts[i])
        end = places.starts[i]
    moved.reverse()
    return moved


def _in_order(canonical: list[bytes], order: list[int] | None) -> list[bytes]:
    return canonical if order is None else list(map(canonical.__getitem__, order))


def _market_bytes(data: bytes, limits: DataLimits) -> tuple[bytes, tuple[int, ...]] | None:
    """The head of {"markets": [...]} and where each market ends, found by skipping; None for any other
    shape."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(1, len(data)))
    unpacker.feed(data)
    if unpacker.read_map_header() != 1 or unpacker.unpack() != "markets":
        return None
    count = unpacker.read_array_header()
    if count > limits.max_markets:
        return None
    start = unpacker.tell()
    skip, tell = unpacker.skip, unpacker.tell
    ends = []
    for _ in range(count):
        skip()
        ends.append(tell())
    if (ends[-1] if ends else start) != len(data):
        return None  # trailing bytes: refused by the full decode
    return data[:start], tuple(ends)


def _one_market(raw: bytes, limits: DataLimits) -> tuple[MarketRow, bytes, Shape] | None:
    """One market's row, canonical bytes and shape, when it is a plain valid market: its three keys, text
    labels and a flat map of numeric odds, in any order. None for anything else, which the full decode
    judges.

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
    shown = tuple(outcomes)
    names, odds = shown, tuple(outcomes.values())
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
    keys = tuple(market)
    canonical_shape = in_order and floats and keys == CANONICAL_KEYS
    packed = msgpack.packb(market, use_bin_type=True) if canonical_shape else pack_row(row)
    if packed == raw:
        return row, raw, None
    # The producer's own order of keys and outcomes: its next odds move can be read from a template.
    return row, packed, None if keys == CANONICAL_KEYS and in_order else (keys, shown)


_NUMBER_TYPES = frozenset((int, float))
