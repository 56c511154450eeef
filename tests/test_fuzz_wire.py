"""Fuzzing the wire decoder through its public API: generated envelopes and data payloads only ever give a
decoded snapshot or InvalidEntry with a readable reason, and what decodes round-trips to its fingerprint.

`make test` runs a short subset with a fixed seed; `make fuzz` runs the full number of cases (see the
hypothesis profiles in tests/conftest.py).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.wire import (
    BOOKMAKER_SLUG,
    MAX_TEXT_CHARS,
    MAX_TS_MS,
    MIN_TS_MS,
    InvalidEntry,
    Market,
    canonical_markets,
    fingerprint,
    parse_envelope,
)
from shared.wire_data import decode_data
from tests.fuzzing import DAMAGE, PAYLOADS, SCALARS, counted, damaged, new_example, pack, readable

MAX_ENTRY_BYTES = 1_048_576


def check_payload(data: bytes) -> None:
    """Decoded or refused with a readable reason, and decoded content round-trips to its fingerprint."""
    counted()
    try:
        decoded = decode_data(data)
    except InvalidEntry as exc:
        assert readable(str(exc)), (data, str(exc))
        return
    except Exception as exc:
        raise AssertionError(f"decode_data({data!r}) raised {type(exc).__name__}: {exc}") from exc
    markets = [
        Market(r.market, r.specifier, dict(zip(r.outcomes, r.odds, strict=True))) for r in decoded.markets
    ]
    canonical = canonical_markets(markets)
    assert fingerprint(canonical) == decoded.fingerprint, data
    assert decode_data(canonical) == decoded, data


@given(PAYLOADS, DAMAGE)
def test_any_payload_decodes_or_is_refused_with_a_readable_reason(
    data: bytes, damage: list[tuple[int, int]]
) -> None:
    new_example()
    for payload in damaged(data, damage):
        check_payload(payload)


TS_VALUES = st.one_of(
    st.integers(MIN_TS_MS - 5, MAX_TS_MS + 5).map(lambda n: str(n).encode()),
    st.integers(0, 10**20).map(lambda n: str(n).encode()),
    st.integers(0, 6000).map(lambda n: b"1" * n),  # long digit strings
    st.integers(1, 30).map(lambda n: b"0" * n + b"1795000000000"),  # leading zeros
    st.sampled_from([b"", b"-1", b"1e12", b" 1795000000000", "１７９５".encode(), b"1795000000000.0"]),
    st.binary(max_size=16),
)
FIELD_VALUES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=140).map(str.encode),
    st.sampled_from([b"1", b"2", b"bet9ja", b"Bet 9ja", b"sr:match:1", "é".encode(), b"\x00", b"a" * 33]),
    SCALARS.map(pack),
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[bytes, bytes]:
    fields = {
        b"v": draw(st.sampled_from([b"1"]) | FIELD_VALUES),
        b"event": draw(FIELD_VALUES),
        b"bookmaker": draw(st.sampled_from([b"bet9ja", b"a-b_c9"]) | FIELD_VALUES),
        b"ts": draw(TS_VALUES),
        b"data": draw(PAYLOADS | st.binary(max_size=8)),
    }
    for name in draw(st.sets(st.sampled_from(list(fields)), max_size=2)):
        del fields[name]
    fields.update(draw(st.dictionaries(st.binary(max_size=8), FIELD_VALUES, max_size=3)))
    return fields


@given(envelopes())
def test_any_envelope_parses_or_is_refused_with_a_readable_reason(fields: dict[bytes, bytes]) -> None:
    new_example()
    counted()
    try:
        envelope = parse_envelope(fields, MAX_ENTRY_BYTES)
    except InvalidEntry as exc:
        assert readable(str(exc)), str(exc)
        return
    # What parses keeps the contract's promises
    assert MIN_TS_MS <= envelope.ts_ms < MAX_TS_MS
    assert BOOKMAKER_SLUG.fullmatch(envelope.bookmaker.encode())
    assert 1 <= len(envelope.event) <= MAX_TEXT_CHARS and "\x00" not in envelope.event
    assert envelope.data == fields[b"data"] and len(envelope.data) <= MAX_ENTRY_BYTES
