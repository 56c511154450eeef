"""Wire format v1: encoding, canonical form, and a readable reason for every malformed entry."""

from __future__ import annotations

import math

import msgpack
import pytest

from shared.wire import InvalidEntry, Market, Snapshot, encode, fingerprint, parse_envelope
from shared.wire_data import decode_data

LIMIT = 1_048_576


def snapshot(markets: tuple[Market, ...], ts: int = 1_795_000_000_000) -> Snapshot:
    return Snapshot("sr:match:1", "sportybet", ts, markets)


def fields_of(s: Snapshot) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in encode(s).items()}


def test_encoded_snapshot_parses_back_to_its_content() -> None:
    # Given a snapshot with two markets
    s = snapshot(
        (
            Market("1X2", "", {"1": 2.1, "X": 3.3, "2": 3.6}),
            Market("Over/Under", "total=2.5", {"Over": 1.9, "Under": 1.95}),
        )
    )
    # When it is encoded and parsed as a consumer would
    envelope = parse_envelope(fields_of(s), LIMIT)
    decoded = decode_data(envelope.data)
    # Then header and markets come back, markets and outcomes in canonical order
    assert (envelope.event, envelope.bookmaker, envelope.ts_ms) == (s.event, s.bookmaker, s.captured_at_ms)
    assert [(m.market, m.specifier, dict(zip(m.outcomes, m.odds))) for m in decoded.markets] == sorted(
        (m.market, m.specifier, dict(m.outcomes)) for m in s.markets
    )


def test_producer_data_is_canonical_so_its_raw_digest_is_the_fingerprint() -> None:
    # Given a snapshot encoded by the producer
    data = encode(snapshot((Market("BTTS", "", {"Yes": 1.8, "No": 2.0}), Market("1X2", "", {"1": 2.0}))))[
        "data"
    ]
    # Then hashing the raw bytes gives the content fingerprint, which is the consumer's fast path
    assert fingerprint(data) == decode_data(data).fingerprint


def test_equal_content_in_another_order_has_the_same_fingerprint() -> None:
    # Given the same odds sent by a third-party publisher in another order, odds as integers where whole
    canonical = encode(snapshot((Market("1X2", "", {"1": 2.0, "X": 3.5}), Market("BTTS", "", {"No": 2.0}))))[
        "data"
    ]
    shuffled = msgpack.packb(
        {
            "markets": [
                {"outcomes": {"No": 2}, "specifier": "", "market": "BTTS"},
                {"market": "1X2", "specifier": "", "outcomes": {"X": 3.5, "1": 2}},
            ]
        }
    )
    # Then the raw bytes differ but the fingerprints are equal
    assert shuffled != canonical
    assert decode_data(shuffled).fingerprint == decode_data(canonical).fingerprint


def test_changed_odds_change_the_fingerprint() -> None:
    a = encode(snapshot((Market("1X2", "", {"1": 2.0}),)))["data"]
    b = encode(snapshot((Market("1X2", "", {"1": 2.01}),)))["data"]
    assert decode_data(a).fingerprint != decode_data(b).fingerprint


GOOD = {
    b"v": b"1",
    b"event": b"e1",
    b"bookmaker": b"bet9ja",
    b"ts": b"1795000000000",
    b"data": msgpack.packb({"markets": []}),
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({b"v": None}, "missing field 'v'"),
        ({b"data": None}, "missing field 'data'"),
        ({b"v": b"2"}, "unsupported wire version"),
        ({b"bookmaker": b"Bet 9ja"}, "not a slug"),
        ({b"event": b""}, "event must have 1 to 128 characters"),
        ({b"event": b"\xff\xfe"}, "not UTF-8"),
        ({b"ts": b"soon"}, "integer milliseconds"),
        ({b"ts": b"1795000000"}, "seconds instead of milliseconds"),
        ({b"data": b"x" * (LIMIT + 1)}, "over the limit"),
        # int() raises a plain ValueError past 4,300 digits; with fewer, an age computed from it overflows
        ({b"ts": b"1" * 5000}, "5000 characters long"),
        ({b"ts": b"9" * 400}, "400 characters long"),
        ({b"ts": b"x" * 21}, "21 characters long"),
    ],
)
def test_bad_header_gets_a_readable_reason(change: dict[bytes, bytes | None], reason: str) -> None:
    # Given an entry with one header field broken
    fields = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    # Then parsing names what is wrong
    with pytest.raises(InvalidEntry, match=reason):
        parse_envelope(fields, LIMIT)


@pytest.mark.parametrize(
    "change",
    [{b"bookmaker": 7}, {b"event": None}, {b"ts": 1795000000000}, {b"data": object()}, {b"v": 1}],
    ids=["int bookmaker", "no event", "int ts", "object data", "int v"],
)
def test_header_parsing_raises_nothing_but_invalid_entry(change: dict[bytes, object]) -> None:
    # Given fields no Redis reply holds (values that are not bytes), standing for whatever a parser bug
    # could meet: another exception would crash the daemon on every redelivery of the entry
    fields = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    # Then parsing fails with a reason to dead-letter, or succeeds
    try:
        parse_envelope(fields, LIMIT)  # type: ignore[arg-type]
    except InvalidEntry as exc:
        assert str(exc)


def test_a_ts_with_leading_zeros_is_still_a_capture_time() -> None:
    assert parse_envelope({**GOOD, b"ts": b"0001795000000000"}, LIMIT).ts_ms == 1_795_000_000_000


def test_unknown_fields_are_ignored() -> None:
    assert parse_envelope({**GOOD, b"source": b"scraper-7"}, LIMIT).bookmaker == "bet9ja"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1\xc1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "must be a map with a 'markets' list"),
        (msgpack.packb({"markets": {}}), "must be a list"),
        (msgpack.packb({"markets": [{"market": "1X2", "outcomes": {"1": 2.0}}]}), "missing 'specifier'"),
        (
            msgpack.packb({"markets": [{"market": 7, "specifier": "", "outcomes": {"1": 2.0}}]}),
            "must be a string",
        ),
        (
            msgpack.packb({"markets": [{"market": ["1X2"], "specifier": "", "outcomes": {"1": 2.0}}]}),
            "market must be a string, not list",
        ),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": {"t": 1}, "outcomes": {"1": 2.0}}]}),
            "specifier must be a string, not dict",
        ),
        (msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {}}]}), "non-empty map"),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": math.nan}}]}),
            "finite",
        ),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": math.inf}}]}),
            "finite",
        ),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": -1.5}}]}),
            "from 1.0 to",
        ),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": "2.0"}}]}),
            "a number",
        ),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": True}}]}),
            "a number",
        ),
        (msgpack.packb({"markets": [{"market": "a\x00b", "specifier": "", "outcomes": {"1": 2.0}}]}), "NUL"),
        (
            msgpack.packb({"markets": [{"market": "1X2", "specifier": "", "outcomes": {"1": 2.0}}] * 2}),
            "twice",
        ),
    ],
)
def test_bad_data_gets_a_readable_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason):
        decode_data(data)


def test_fingerprint_is_the_same_whether_data_was_canonical_or_not() -> None:
    # Given odds exactly representable in float32, sent once canonically and once as float32 in order
    markets = (
        Market("1X2", "", {"1": 2.5, "2": 3.0, "X": 1.75}),
        Market("BTTS", "", {"No": 1.5, "Yes": 2.25}),
    )
    canonical = encode(snapshot(markets))["data"]
    doc = msgpack.unpackb(canonical)
    as_float32 = msgpack.packb(doc, use_single_float=True)
    # Then the shortcut for canonical bytes and the full path agree on the fingerprint
    assert as_float32 != canonical
    assert decode_data(as_float32).fingerprint == decode_data(canonical).fingerprint == fingerprint(canonical)


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300])
def test_canonical_data_is_one_msgpack_document_whatever_the_market_count(count: int) -> None:
    # Given a snapshot with a market count on each side of msgpack's array header sizes
    markets = tuple(Market(f"m{i:03}", "", {"1": 1.5 + i, "2": 2.5}) for i in range(count))
    data = encode(snapshot(markets))["data"]
    # Then it is exactly what msgpack itself packs for the canonical document
    expected = {
        "markets": [
            {"market": m.market, "specifier": "", "outcomes": dict(sorted(m.outcomes.items()))}
            for m in markets
        ]
    }
    assert data == msgpack.packb(expected)


def test_a_market_keeps_its_own_copy_of_the_outcomes() -> None:
    # Given a market built from a dict that its scraper mutates afterwards
    outcomes = {"1": 2.0, "2": 3.0}
    market = Market("1X2", "", outcomes)
    before = encode(snapshot((market,)))["data"]
    outcomes["1"] = 9.0
    # Then the market and its encoding are unchanged
    assert market.outcomes["1"] == 2.0 and encode(snapshot((market,)))["data"] == before
