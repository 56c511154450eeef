"""Fuzzing the decoder that reuses earlier decodes: it gives exactly what decode_data gives, or refuses
with the very same reason, whatever it remembered from the payloads before.

`make test` runs a short subset with a fixed seed; `make fuzz` runs the full number of cases.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from consumer.decoding import ReusingDecoder
from consumer.plan import Change, Decoder, Entry, FeedState, memo_decoder, parse, plan
from shared.wire import Decoded, InvalidEntry, MarketRow
from shared.wire_data import decode_data
from tests.fuzzing import DAMAGE, PAYLOADS, counted, damaged, new_example

# One decoder for every example, and one feed, so each payload meets the one before as that feed's last:
# a damaged copy of a payload has its length, and is decoded as a revision of it.
DECODER = ReusingDecoder(markets=1000)


def outcome(decode: Callable[[bytes], Decoded], data: bytes) -> tuple[bytes, tuple[MarketRow, ...]] | str:
    try:
        decoded = decode(data)
    except InvalidEntry as exc:
        return str(exc)
    return decoded.fingerprint, decoded.markets


def check(data: bytes) -> None:
    counted()
    assert outcome(lambda d: DECODER.decode(d, feed="fuzz"), data) == outcome(decode_data, data), data


@given(PAYLOADS, DAMAGE)
def test_reusing_earlier_decodes_changes_no_outcome(data: bytes, damage: list[tuple[int, int]]) -> None:
    new_example()
    for payload in damaged(data, damage):
        check(payload)
        check(data)  # again, now from memory


FEED_EVENT, FEED_BOOKMAKER = "sr:match:1", "bet9ja"
LABELS = [
    ("1X2", "", ("1", "2", "X")),
    ("Over/Under", "total=2.5", ("Over", "Under")),
    ("BTTS", "", ("No", "Yes")),
]
ODDS = st.sampled_from([1.5, 2.0, 2.25, 3.1, 7.0])


@st.composite
def revisions(draw: st.DrawFn) -> list[bytes]:
    """Payloads of one feed, cycle after cycle: mostly odds moves, which keep every market in its place,
    and now and then a market gone or back, or the same content in a producer's own byte order."""
    payloads = []
    for _ in range(draw(st.integers(1, 10))):
        shown = [m for m in LABELS if draw(st.integers(0, 9)) > 0]
        rows = [
            {"market": m, "specifier": s, "outcomes": {n: draw(ODDS) for n in names}} for m, s, names in shown
        ]
        if draw(st.integers(0, 4)) == 0:  # the producer's own order of markets and outcomes, whole odds
            rows = [
                {
                    "outcomes": {n: int(o) if o == int(o) else o for n, o in reversed(r["outcomes"].items())},
                    **r,
                }
                for r in reversed(rows)
            ]
        payloads.append(msgpack.packb({"markets": rows}))
    return payloads


def planned(payloads: list[bytes], decoder: Decoder) -> list[tuple[bytes, list[Change]]]:
    """Each payload planned in a batch of its own against what the plan before left, as the writer keeps
    it: the snapshot's fingerprint, confirmation and markets."""
    state: dict[str, FeedState] = {}
    written = []
    for i, data in enumerate(payloads):
        fields = {b"v": b"1", b"event": FEED_EVENT.encode(), b"bookmaker": FEED_BOOKMAKER.encode()}
        fields |= {b"ts": str(1_795_000_000_000 + i).encode(), b"data": data}
        parsed, _ = parse([Entry("s:0", f"{i}-0".encode(), fields, 1)], 1_048_576, 10)
        result = plan(parsed, state, memo_decoder(decoder))
        for new in result.inserts:
            written.append((new.fingerprint, new.changes))
            state[new.feed] = FeedState(
                i, new.fingerprint, new.captured_at_ms, result.final_markets[new.feed]
            )
    return written


@given(revisions())
def test_changes_taken_from_a_revision_are_the_compared_ones(payloads: list[bytes]) -> None:
    new_example()
    counted()
    # The reusing decoder's revisions let the plan take their changes; decode_data's rows are compared.
    reusing = ReusingDecoder(markets=1000)
    assert planned(payloads, reusing) == planned(payloads, lambda p: decode_data(p.envelope.data))
