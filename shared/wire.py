"""Wire format v1: one Redis stream entry per (event, bookmaker) snapshot.

Fields: v=1, event, bookmaker, ts (capture time, integer ms since the epoch, UTC) and data, the msgpack of
{"markets": [{"market": str, "specifier": str, "outcomes": {name: odds}}]}. Unknown fields are ignored.

The fingerprint is a digest of the *canonical* data bytes (markets sorted by market and specifier, outcomes
by name, odds as float64). The project's producer always sends canonical data, so a consumer can tell an
unchanged snapshot by hashing the raw bytes, without decoding a single market. Data from other publishers
is decoded and canonicalised first, so equal content always gets an equal fingerprint.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter, itemgetter, lt
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


def _pack(ordered: list[MarketRow]) -> bytes:
    return packed_data(list(map(pack_row, ordered)))


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
    return Envelope(_text("event", fields[b"event"], 1), bookmaker.decode(), _ts(fields[b"ts"]), data)


def decode_data(data: bytes, limits: DataLimits = DEFAULT_LIMITS, *, digest: bytes | None = None) -> Decoded:
    """Decode and validate the markets, and fingerprint their canonical form.

    digest: fingerprint(data), when the caller has it already (every entry's raw bytes are hashed at
    parse), so that canonical data is not hashed twice.
    """
    try:
        doc = unpack_limited(data, limits)
    except InvalidEntry:
        raise
    except ValueError as exc:
        raise InvalidEntry(_over_limit(str(exc), limits) or _not_msgpack(exc)) from exc
    except Exception as exc:  # msgpack raises a zoo of types (ExtraData, FormatError, StackError, ...)
        raise InvalidEntry(_not_msgpack(exc)) from exc
    if not isinstance(doc, dict) or "markets" not in doc:
        raise InvalidEntry("data must be a map with a 'markets' list")
    markets = doc["markets"]
    if not isinstance(markets, list):
        raise InvalidEntry(f"data.markets must be a list, not {type(markets).__name__}")
    rows = _well_formed(markets)
    well_formed = rows is not None
    if rows is None:
        rows = [checked_market(i, m) for i, m in enumerate(markets)]
    keys = list(map(_market_key, rows))
    # Strictly increasing keys: in canonical order, and no market twice.
    if well_formed and all(map(lt, keys, keys[1:])) and _is_canonical(doc, markets, data):
        return Decoded(fingerprint(data) if digest is None else digest, tuple(rows))
    ordered_keys = sorted(keys)
    if len(set(keys)) != len(keys):
        twice = next(k for k, after in zip(ordered_keys, ordered_keys[1:]) if k == after)
        raise InvalidEntry(f"market {twice[0]!r} with specifier {twice[1]!r} appears twice")
    rows.sort(key=_market_key)
    return Decoded(fingerprint(_pack(rows)), tuple(rows))


def unpack_limited(data: bytes, limits: DataLimits) -> Any:
    """msgpack's own limits stop a list, a map or a string at its header; the containers are counted too,
    but only when the data could hold too many: counting costs a Python call for each one."""
    options = _UNPACK_OPTIONS | {"max_array_len": limits.max_markets, "max_map_len": limits.max_outcomes}
    # A map or a list takes at least a byte: data this short cannot hold too many (the usual snapshot of
    # 40 markets has 3.5 kB).
    if len(data) <= limits.max_containers:
        return msgpack.unpackb(data, **options)
    containers = 0

    def counted(container: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > limits.max_containers:
            raise InvalidEntry(
                f"data holds more than {limits.max_containers:,} maps and lists, more than a snapshot of "
                f"{limits.max_markets:,} markets (ODDS_MAX_MARKETS) can"
            )
        return container

    return msgpack.unpackb(data, **options, object_hook=counted, list_hook=counted)


_UNPACK_OPTIONS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": False,
    "use_list": True,
    "max_str_len": MAX_TEXT_BYTES,
    "max_bin_len": MAX_TEXT_BYTES,
    "max_ext_len": MAX_TEXT_BYTES,
}


_LIMIT_HIT = re.compile(r"^(?P<size>\d+) exceeds max_(?P<kind>array|map|str|bin|ext)_len\((?P<limit>\d+)\)$")


def _over_limit(message: str, limits: DataLimits) -> str | None:
    """A readable reason for a limit msgpack met at a header, before building what it announced."""
    hit = _LIMIT_HIT.match(message)
    if hit is None:
        return None
    size, kind = int(hit["size"]), hit["kind"]
    if kind == "array":
        return f"data has a list of {size:,} items, over {limits.max_markets:,} markets (ODDS_MAX_MARKETS)"
    if kind == "map":
        return (
            f"data has a map of {size:,} entries, over {limits.max_outcomes:,} outcomes in a market "
            "(ODDS_MAX_OUTCOMES)"
        )
    return (
        f"data has a {'string' if kind != 'ext' else 'value'} of {size:,} bytes, over {MAX_TEXT_BYTES} "
        f"(a name has at most {MAX_TEXT_CHARS} characters)"
    )


def _not_msgpack(exc: Exception) -> str:
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"data is not valid msgpack: {detail}"


def _is_canonical(doc: dict[str, Any], markets: list[Any], data: bytes) -> bool:
    """Whether data already is the canonical encoding of its well-formed markets, which are in order.

    Then the raw bytes are fingerprinted as they are, instead of building and packing the canonical form
    again: re-encoding the decoded document reproduces data only when every value has its canonical
    encoding, and well-formed markets already have their outcomes in order, so what is left to check is
    the order of each market's keys.
    """
    return (
        len(doc) == 1
        and list(map(tuple, markets)) == [CANONICAL_KEYS] * len(markets)
        and msgpack.packb(doc, use_bin_type=True) == data
    )


CANONICAL_KEYS = ("market", "specifier", "outcomes")  # a market's keys, in the order canonical data has them
row_key = itemgetter(0, 1)  # a MarketRow's (market, specifier): what orders and names the markets of a feed


def _well_formed(markets: list[Any]) -> list[MarketRow] | None:
    """Validate the common, well-formed case in bulk; None when anything is unusual.

    Decoding is the consumer's cost for every changed snapshot. Checking market by market costs a few
    microseconds each, so the common case is checked in a fixed number of builtin passes over the snapshot.
    A market's labels (its name, specifier and outcome names in order) repeat from snapshot to snapshot
    while only the odds move, so labels are checked once and remembered. Anything unusual (ints as odds,
    bin strings, outcomes out of order, a bad value) returns None and takes the detailed path, which
    accepts and rejects exactly the same inputs and says what is wrong.
    """
    if not all(map(isinstance, markets, repeat(dict))):
        return None
    try:
        fields = list(map(_MARKET_FIELDS, markets))
    except KeyError:
        return None
    if not fields:
        return []
    names, specifiers, outcomes = zip(*fields, strict=True)
    # Types first: a list or a map as a name would not even hash for the look-up below.
    if not (
        all(map(isinstance, names, repeat(str)))
        and all(map(isinstance, specifiers, repeat(str)))
        and all(map(isinstance, outcomes, repeat(dict)))
    ):
        return None
    outcome_names = list(map(tuple, outcomes))
    labels = list(zip(names, specifiers, outcome_names))
    if not all(map(_KNOWN_LABELS.__contains__, labels)) and not all(map(_remember_if_good, labels)):
        return None
    odds = list(chain.from_iterable(map(dict.values, outcomes)))
    if not (
        all(map(isinstance, odds, repeat(float)))
        # A NaN or an infinity makes the sum non-finite; finite odds then only need their bounds.
        and math.isfinite(sum(odds))
        and min(odds) >= 1.0
        and max(odds) <= MAX_ODDS
    ):
        return None
    return list(map(MarketRow, names, specifiers, outcome_names, map(tuple, map(dict.values, outcomes))))


Labels = tuple[Any, Any, tuple[Any, ...]]  # a market's name, specifier and outcome names in order
# Each to the first equal instance seen: rows built from it share their strings and tuples.
_KNOWN_LABELS: dict[Labels, Labels] = {}
_KNOWN_LABELS_LIMIT = 100_000


def shared_labels(labels: Labels) -> Labels | None:
    """These labels when well-formed, as the instance remembered first (rows that keep them share it);
    None when they are not well-formed (outcomes out of order included)."""
    known = _KNOWN_LABELS.get(labels)
    if known is None and _remember_if_good(labels):
        known = labels
    return known


def _remember_if_good(labels: Labels) -> bool:
    """Whether a market's labels are well-formed, its outcomes non-empty and in order; if so, remember."""
    market, specifier, outcome_names = labels
    texts = (market, specifier, *outcome_names)
    good = (
        len(outcome_names) > 0
        and all(map(isinstance, texts, repeat(str)))
        and 0 < len(market) <= MAX_TEXT_CHARS
        and max(map(len, texts)) <= MAX_TEXT_CHARS
        and min(map(len, outcome_names)) > 0
        and "\x00" not in "".join(texts)
        and all(map(lt, outcome_names, outcome_names[1:]))
    )
    if good:
        if len(_KNOWN_LABELS) >= _KNOWN_LABELS_LIMIT:
            _KNOWN_LABELS.clear()  # unusual labels cannot grow it without bound
        _KNOWN_LABELS[labels] = labels
    return good


_MARKET_FIELDS = itemgetter("market", "specifier", "outcomes")


def checked_market(index: int, raw: Any) -> MarketRow:
    where = f"markets[{index}]"
    if not isinstance(raw, dict):
        raise InvalidEntry(f"{where} must be a map, not {type(raw).__name__}")
    for name in ("market", "specifier", "outcomes"):
        if name not in raw:
            raise InvalidEntry(f"{where} is missing '{name}'")
    market = _text(f"{where}.market", raw["market"], 1)
    specifier = _text(f"{where}.specifier", raw["specifier"], 0)
    outcomes = raw["outcomes"]
    if not isinstance(outcomes, dict) or not outcomes:
        raise InvalidEntry(f"{where}.outcomes must be a non-empty map of outcome name to decimal odds")
    # Keys are read with their values: a msgpack bin key (b"1") decodes to a name that is not itself a key
    # of the map, and "1" next to b"1" would be one outcome named twice.
    named: dict[str, float] = {}
    for raw_name, value in outcomes.items():
        name = _text(f"{where}.outcomes key", raw_name, 1)
        if name in named:
            raise InvalidEntry(f"{where}.outcomes names {name!r} twice")
        named[name] = _odds(f"{where}.outcomes[{name!r}]", value)
    names = sorted(named)
    return MarketRow(market, specifier, tuple(names), tuple(named[n] for n in names))


def _odds(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEntry(f"{where} must be a number, not {type(value).__name__}")
    odds = float(value)
    if not math.isfinite(odds) or not 1.0 <= odds <= MAX_ODDS:
        raise InvalidEntry(f"{where} = {value!r}: decimal odds must be finite, from 1.0 to {MAX_ODDS:,.0f}")
    return odds


def _text(where: str, value: Any, min_chars: int) -> str:
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
