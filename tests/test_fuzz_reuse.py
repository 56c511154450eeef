"""Fuzzing the decoder that reuses earlier decodes: it gives exactly what decode_data gives, or refuses
with the very same reason, whatever it remembered from the payloads before.

`make test` runs a short subset with a fixed seed; `make fuzz` runs the full number of cases.
"""

from __future__ import annotations

from hypothesis import given

from consumer.decoding import ReusingDecoder
from shared.wire import Decoded, InvalidEntry, decode_data
from tests.fuzzing import DAMAGE, PAYLOADS, counted, damaged, new_example

# One decoder for every example, so each one meets what the examples before left in its memory.
DECODER = ReusingDecoder(markets=1000, snapshots=1000)


def outcome(decode: object, data: bytes) -> Decoded | str:
    try:
        return decode(data)  # type: ignore[operator, no-any-return]
    except InvalidEntry as exc:
        return str(exc)


def check(data: bytes) -> None:
    counted()
    assert outcome(DECODER, data) == outcome(decode_data, data), data


@given(PAYLOADS, DAMAGE)
def test_reusing_earlier_decodes_changes_no_outcome(data: bytes, damage: list[tuple[int, int]]) -> None:
    new_example()
    for payload in damaged(data, damage):
        check(payload)
        check(data)  # again, now from memory
