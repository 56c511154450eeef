"""Wire format v1: one Redis stream entry per (event, bookmaker) snapshot.

Fields: v=1, event, bookmaker, ts (capture time, integer ms since the epoch, UTC) and data, the msgpack of
{"markets": [{"market": str, "specifier": str, "outcomes": {name: odds}}]}. Unknown fields are ignored.

The fingerprint is a digest of the *canonical* data bytes (markets sorted by market and specifier, outcomes
by name, odds as float64). The project's producer always sends canonical data, so a consumer can tell an
unchanged snapshot by hashing the raw bytes, without decoding a single market. Data from other publishers
is decoded and canonicalised first, so equal content always gets an equal fingerprint
(shared/wire_data.py decodes and checks data).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

WIRE_VERSION = b"1"
MAX_TEXT_CHARS = 128
MAX_TEXT_BYTES = 4 * MAX_TEXT_CHARS  # the most UTF-8 bytes a name of MAX_TEXT_CHARS characters can take
MAX_ODDS = 1_000_000.0
# Capture times outside 2000..2100 are not clocks but bugs (seconds instead of ms, a zero, a garbage value).
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000
MAX_TS_DIGITS = 20  # every capture time in range has 13; leading zeros are tolerated up to this length
BOOKMAKER_SLUG = re.compile(rb"[a-z0-9_-]{1,32}")
REQUIRED_FIELDS = (b"v", b"event", b"bookmaker", b"ts", b"data")


class InvalidEntry(ValueError):
    """The entry breaks wire format v1; the message is the readable reason put in the dead-letter stream."""


@dataclass(frozen=True, slots=True)
class DataLimits:
    """How large a snapshot's data may be, in its shape (the max_markets and max_outcomes settings).

    Checked while msgpack reads the data, before the oversized part is built: a snapshot of 100,000 markets
    fails at its list's header, a long name at its string's header. The maps and lists of the whole document
    are counted too, so that a megabyte of nested empty ones cannot become tens of megabytes of objects.
    """

    max_markets: int = 10_000
    max_outcomes: int = 1_000  # also bounds every map, so at least the three keys of a market's own map

    def __post_init__(self) -> None:
        if self.max_markets < 1 or self.max_outcomes < 3:
            raise ValueError("max_markets must be at least 1, max_outcomes at least 3")

    @property
    def max_containers(self) -> int:
        """The maps and lists a snapshot of max_markets markets holds: its own map and list, and per market
        a map and its outcomes' map."""
        return 2 + 2 * self.max_markets


DEFAULT_LIMITS = DataLimits()


@dataclass(frozen=True, slots=True)
class Market:
    """One market of a snapshot: outcome name to decimal odds.

    Immutable through and through: it keeps its own read-only copy of the outcomes and encodes itself once,
    when built. A scraper that keeps an unchanged market's object between cycles (as the simulator does)
    then publishes it again with no encoding work.
    """

    market: str
    specifier: str
    outcomes: Mapping[str, float]
    packed: bytes = field(init=False, repr=False, compare=False)  # canonical msgpack of this market

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcomes", MappingProxyType(dict(self.outcomes)))
        object.__setattr__(self, "packed", pack_row(market_row(self)))


@dataclass(frozen=True, slots=True)
class Snapshot:
    event: str
    bookmaker: str
    captured_at_ms: int
    markets: tuple[Market, ...]


class MarketRow(NamedTuple):
    """One market in canonical order, shaped for storage: outcome names and odds as parallel arrays.

    A NamedTuple rather than a frozen dataclass: a changed snapshot builds forty of them, and a frozen
    dataclass pays a Python-level attribute set per field.
    """

    market: str
    specifier: str
    outcomes: tuple[str, ...]
    odds: tuple[float, ...]


CANONICAL_KEYS = ("market", "specifier", "outcomes")  # a market's keys, in the order canonical data has them
row_key = itemgetter(0, 1)  # a MarketRow's (market, specifier): what orders and names the markets of a feed


@dataclass(frozen=True, slots=True)
class Envelope:
    """An entry whose header fields are checked; its data is still undecoded bytes."""

    event: str
    bookmaker: str
    ts_ms: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Decoded:
    fingerprint: bytes
    markets: tuple[MarketRow, ...]


def fingerprint(canonical_data: bytes) -> bytes:
    return hashlib.blake2b(canonical_data, digest_size=16).digest()


def canonical_markets(markets: Iterable[Market]) -> bytes:
    """The canonical data of a snapshot's markets, from each market's memoised encoding."""
    return packed_in_order(sorted(markets, key=_market_key))


def packed_in_order(ordered: Sequence[Market]) -> bytes:
    """The data of markets already in canonical order."""
    return packed_data(list(map(_packed, ordered)))


def packed_data(packed_markets: Sequence[bytes]) -> bytes:
    """The data of markets from their own encodings, in the order given."""
    return data_head(len(packed_markets)) + b"".join(packed_markets)


def data_head(markets: int) -> bytes:
    """What data of this many markets holds before the first one's encoding."""
    return _DATA_PREFIX + _array_header(markets)


_market_key = attrgetter("market", "specifier")
_packed = attrgetter("packed")
# msgpack concatenates: the map {"markets": [m1, m2, ...]} is a one-entry map header with its key, the
# array header, then each market's own encoding. Both encoders build data this way, from _pack_row alone.
_DATA_PREFIX: bytes = b"\x81" + msgpack.packb("markets")


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big") if n < 0x10000 else b"\xdd" + n.to_bytes(4, "big")


def pack_row(row: MarketRow) -> bytes:
    outcomes = dict(zip(row.outcomes, row.odds, strict=True))
    return msgpack.packb(  # type: ignore[no-any-return]
        {"market": row.market, "specifier": row.specifier, "outcomes": outcomes}, use_bin_type=True
    )


def market_row(market: Market) -> MarketRow:
    names = sorted(market.outcomes)
    return MarketRow(
        market.market, market.specifier, tuple(names), tuple(float(market.outcomes[n]) for n in names)
    )


def encode(snapshot: Snapshot) -> dict[str, bytes]:
    """The stream entry fields for one snapshot, with canonical data."""
    return envelope_fields(snapshot, canonical_markets(snapshot.markets))


def envelope_fields(snapshot: Snapshot, data: bytes) -> dict[str, bytes]:
    return {
        "v": WIRE_VERSION,
        "event": snapshot.event.encode(),
        "bookmaker": snapshot.bookmaker.encode(),
        "ts": str(snapshot.captured_at_ms).encode(),
        "data": data,
    }


def parse_envelope(fields: Mapping[bytes, bytes], max_entry_bytes: int) -> Envelope:
    """Check the header fields. Cheap: it never looks inside data.

    Raises InvalidEntry and nothing else: any other exception would be a parser bug that this entry
    triggers, and would crash the daemon again on every redelivery of it. It becomes the entry's
    dead-letter reason instead.
    """
    try:
        return _parse_envelope(fields, max_entry_bytes)
    except InvalidEntry:
        raise
    except Exception as exc:
        raise InvalidEntry(f"header could not be parsed: {type(exc).__name__}: {exc}"[:300]) from exc


def _parse_envelope(fields: Mapping[bytes, bytes], max_entry_bytes: int) -> Envelope:
    for name in REQUIRED_FIELDS:
        if name not in fields:
            raise InvalidEntry(f"missing field '{name.decode()}'")
    if fields[b"v"] != WIRE_VERSION:
        raise InvalidEntry(f"unsupported wire version {_show(fields[b'v'])}; this consumer reads v1")
    data = fields[b"data"]
    if len(data) > max_entry_bytes:
        raise InvalidEntry(f"data is {len(data)} bytes, over the limit of {max_entry_bytes}")
    bookmaker = fields[b"bookmaker"]
    if not BOOKMAKER_SLUG.fullmatch(bookmaker):
        raise InvalidEntry(f"bookmaker {_show(bookmaker)} is not a slug of [a-z0-9_-]{{1,32}}")
    return Envelope(checked_text("event", fields[b"event"], 1), bookmaker.decode(), _ts(fields[b"ts"]), data)


def checked_text(where: str, value: Any, min_chars: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError as exc:
            raise InvalidEntry(f"{where} is not UTF-8") from exc
    if not isinstance(value, str):
        raise InvalidEntry(f"{where} must be a string, not {type(value).__name__}")
    if not min_chars <= len(value) <= MAX_TEXT_CHARS:
        raise InvalidEntry(f"{where} must have {min_chars} to {MAX_TEXT_CHARS} characters, has {len(value)}")
    if "\x00" in value:
        raise InvalidEntry(f"{where} contains a NUL character")
    return value


def _ts(raw: bytes) -> int:
    # Bounded before int(): Python refuses over 4,300 digits with a plain ValueError, and converting a long
    # digit string costs time quadratic in its length.
    if len(raw) > MAX_TS_DIGITS:
        raise InvalidEntry(
            f"ts {_show(raw)} is {len(raw)} characters long, over {MAX_TS_DIGITS}; a capture time in "
            "milliseconds has 13 digits"
        )
    if not raw.isdigit():
        raise InvalidEntry(f"ts {_show(raw)} must be integer milliseconds since the Unix epoch")
    ts = int(raw)
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        raise InvalidEntry(f"ts {ts} is outside 2000..2100; is it in seconds instead of milliseconds?")
    return ts


def _show(raw: bytes) -> str:
    text = raw[:40].decode(errors="replace")
    return repr(text + ("…" if len(raw) > 40 else ""))
