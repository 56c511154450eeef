"""Every case the fuzzers found, as a named test: each one failed before its fix."""

from __future__ import annotations

from shared.wire import InvalidEntry, canonical_markets, parse_envelope
from tests.fuzzing import readable

LIMIT = 1_048_576
FOUND = {b"v": b"1", b"event": b"\x01", b"bookmaker": b"bet9ja", b"data": canonical_markets([])}


def refusal(fields: dict[bytes, bytes]) -> str:
    try:
        parse_envelope(fields, LIMIT)
    except InvalidEntry as exc:
        return str(exc)
    raise AssertionError("parsed")


def test_a_ts_of_333_digits_gets_a_short_readable_reason() -> None:
    # Found by test_any_envelope_parses_or_is_refused_with_a_readable_reason (shrunk): the reason quoted
    # the whole number, 336 characters of it
    reason = refusal({**FOUND, b"ts": b"1" * 333})
    assert readable(reason) and "333 characters long" in reason


def test_a_ts_of_5000_digits_is_refused_not_raised() -> None:
    # The same unbounded ts, past the 4,300 digits int() converts: a ValueError, not InvalidEntry, which
    # would have crashed the consumer on every redelivery of the entry
    reason = refusal({**FOUND, b"ts": b"1" * 5000})
    assert readable(reason) and "5000 characters long" in reason
