"""Generators of hostile and broken input for the fuzz tests, and the count of cases run.

msgpack is written here by hand where msgpack-python would not write it: maps with duplicate keys, float32,
any order of keys. Everything else goes through msgpack.packb.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
from hypothesis import strategies as st

from shared.wire import Market, canonical_markets

# What the fuzz properties ran: hypothesis examples, and the cases they checked (a decoder example checks
# its payload and damaged copies of it). Printed at the end of the session.
CASES = {"examples": 0, "cases": 0}


def new_example() -> None:
    CASES["examples"] += 1


def counted() -> None:
    CASES["cases"] += 1


class Pairs(list[tuple[Any, Any]]):
    """A msgpack map written pair by pair, in this order, duplicates kept."""


class Float32(float):
    """A float written as msgpack float32."""


def pack(obj: Any) -> bytes:
    if isinstance(obj, Pairs):
        return _header(len(obj), 0x80, 0xDE) + b"".join(pack(k) + pack(v) for k, v in obj)
    if isinstance(obj, list):
        return _header(len(obj), 0x90, 0xDC) + b"".join(map(pack, obj))
    if isinstance(obj, Float32):
        return b"\xca" + struct.pack(">f", obj)
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _header(n: int, fix: int, wide: int) -> bytes:
    if n < 16:
        return bytes((fix | n,))
    return bytes((wide,)) + n.to_bytes(2, "big") if n < 0x10000 else bytes((wide + 1,)) + n.to_bytes(4, "big")


FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, 0.999999, 1e6, 1e6 + 1, 5e-324, 1.7976931348623157e308]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | FLOATS
    | st.floats(width=32).map(Float32)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999))
)
# Any msgpack document, nested, maps with keys of any type (even unhashable ones) and duplicates.
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.lists(st.tuples(inner, inner), max_size=5).map(Pairs),
    max_leaves=10,
)

NAMES = st.sampled_from(["1", "X", "2", "Over", "Under", "1X2", "total=2.5", "", "é", "a\x00b"])
TEXT_LIKE = st.one_of(
    NAMES,
    st.text(max_size=8),
    NAMES.map(str.encode),  # bytes where a string belongs
    st.integers(120, 140).map(lambda n: "n" * n),  # around the 128-character limit
    st.binary(max_size=6),  # mostly not UTF-8
    SCALARS,
)
ODDS = st.floats(min_value=1.0, max_value=1e6) | st.integers(-3, 2**64 - 1) | FLOATS | SCALARS


@st.composite
def outcomes_map(draw: st.DrawFn) -> Pairs:
    pairs = Pairs(draw(st.lists(st.tuples(TEXT_LIKE, ODDS), max_size=5)))
    if pairs and draw(st.integers(0, 4)) == 0:
        pairs.append((pairs[0][0], draw(ODDS)))  # a name twice
    return pairs


@st.composite
def market_map(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(ANY)
    pairs = Pairs(
        [
            ("market", draw(TEXT_LIKE)),
            ("specifier", draw(TEXT_LIKE)),
            ("outcomes", draw(outcomes_map() | ANY)),
        ]
    )
    if draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from(["market", "specifier", "outcomes", b"market", "extra", 1]))
        pairs.append((key, draw(TEXT_LIKE | outcomes_map())))  # an extra or a repeated key
    if draw(st.integers(0, 9)) == 0:
        del pairs[draw(st.integers(0, len(pairs) - 1))]  # a missing key
    turn = draw(st.integers(0, len(pairs) - 1)) if pairs else 0  # keys in another order
    return Pairs(pairs[turn:] + pairs[:turn])


@st.composite
def schema_like(draw: st.DrawFn) -> bytes:
    """Documents shaped like the wire format's data, with every part of it sometimes wrong."""
    markets: Any = draw(st.lists(market_map(), max_size=6))
    if markets and draw(st.integers(0, 4)) == 0:
        markets.append(markets[0])  # a market twice
    pairs = Pairs([("markets", markets if draw(st.integers(0, 19)) else draw(ANY))])
    if draw(st.integers(0, 9)) == 0:
        pairs.append((draw(st.sampled_from(["markets", "source", b"markets"])), draw(ANY)))
    return pack(pairs)


VALID_TEXT = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=20
)
VALID_MARKETS = st.lists(
    st.builds(
        Market,
        VALID_TEXT,
        st.one_of(st.just(""), VALID_TEXT),
        st.dictionaries(VALID_TEXT, st.floats(min_value=1.0, max_value=1e6), min_size=1, max_size=5),
    ),
    max_size=6,
    unique_by=lambda m: (m.market, m.specifier),
)
VALID_DATA = VALID_MARKETS.map(canonical_markets)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid payload, truncated, with bytes flipped, inserted or removed."""
    data = bytearray(draw(VALID_DATA))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[at]
    return bytes(data)


PAYLOADS = st.one_of(
    schema_like(), ANY.map(pack), VALID_DATA, mutated(), st.binary(max_size=64), st.just(b"")
)


# Where to cut or flip a byte of each payload (taken modulo its length), and the bits flipped.
DAMAGE = st.lists(st.tuples(st.integers(0, 2**16), st.integers(1, 255)), max_size=8)


def damaged(data: bytes, damage: list[tuple[int, int]]) -> Iterator[bytes]:
    """The payload itself, then for each drawn place the payload cut short there and with that byte
    flipped: damaged copies are cheap cases next to generating a new document."""
    yield data
    for at, bits in damage:
        if data:
            i = at % len(data)
            yield data[:i]
            yield data[:i] + bytes((data[i] ^ bits,)) + data[i + 1 :]


def readable(reason: str) -> bool:
    """A dead-letter reason a person can read: one line of printable text, short enough for a table."""
    return 0 < len(reason) <= 400 and reason.isprintable()
