"""Wire format v1, the data field: decoding a snapshot's markets and checking every value in them.

The envelope, the types, the encoders and the fingerprint are in shared/wire.py. What is wrong gets a
reason, which a consumer dead-letters the entry with; the bulk check of the common case accepts exactly
what the market-by-market check accepts.
"""

from __future__ import annotations

import math
import re
from itertools import chain, repeat
from operator import itemgetter, lt
from typing import Any

import msgpack

from shared.wire import (
    CANONICAL_KEYS,
    DEFAULT_LIMITS,
    MAX_ODDS,
    MAX_TEXT_BYTES,
    MAX_TEXT_CHARS,
    DataLimits,
    Decoded,
    InvalidEntry,
    MarketRow,
    checked_text,
    fingerprint,
    pack_row,
    packed_data,
    row_key,
)


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
    keys = list(map(row_key, rows))
    # Strictly increasing keys: in canonical order, and no market twice.
    if well_formed and all(map(lt, keys, keys[1:])) and _is_canonical(doc, markets, data):
        return Decoded(fingerprint(data) if digest is None else digest, tuple(rows))
    ordered_keys = sorted(keys)
    if len(set(keys)) != len(keys):
        twice = next(k for k, after in zip(ordered_keys, ordered_keys[1:]) if k == after)
        raise InvalidEntry(f"market {twice[0]!r} with specifier {twice[1]!r} appears twice")
    rows.sort(key=row_key)
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


def _pack(ordered: list[MarketRow]) -> bytes:
    return packed_data(list(map(pack_row, ordered)))


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
    market = checked_text(f"{where}.market", raw["market"], 1)
    specifier = checked_text(f"{where}.specifier", raw["specifier"], 0)
    outcomes = raw["outcomes"]
    if not isinstance(outcomes, dict) or not outcomes:
        raise InvalidEntry(f"{where}.outcomes must be a non-empty map of outcome name to decimal odds")
    # Keys are read with their values: a msgpack bin key (b"1") decodes to a name that is not itself a key
    # of the map, and "1" next to b"1" would be one outcome named twice.
    named: dict[str, float] = {}
    for raw_name, value in outcomes.items():
        name = checked_text(f"{where}.outcomes key", raw_name, 1)
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
