"""Fuzzing the planner: generated sequences of one feed's entries, split into batches in different ways,
against an independent oracle that applies them one by one.

Entries carry one of a few contents, each in several encodings (canonical, markets reordered, odds as
integers) or broken data; capture times repeat and go backwards; entries are redelivered. The store between
batches is a model of what the writer keeps (the current row's fingerprint and last confirmation). The
oracle knows each entry's content by construction, never by decoding or fingerprinting it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from consumer.plan import Entry, FeedState, Plan, memo_decoder, parse, plan
from shared.wire import Market, canonical_markets, fingerprint
from shared.wire_data import decode_data
from tests.fuzzing import counted, new_example
from tests.test_plan import payload_decoder

TS = 1_795_000_000_000
FEED = ("sr:match:1", "bet9ja")
CONTENTS = [
    (
        Market("1X2", "", {"1": 2.5, "X": 3.1, "2": 2.9}),
        Market("Over/Under", "total=2.5", {"Over": 1.9, "Under": 1.9}),
    ),
    (
        Market("1X2", "", {"1": 2.6, "X": 3.1, "2": 2.8}),
        Market("Over/Under", "total=2.5", {"Over": 1.9, "Under": 1.9}),
    ),
    (Market("1X2", "", {"1": 2.0, "X": 3.0, "2": 4.0}),),
]
BROKEN = len(CONTENTS)  # the content id of data that cannot be decoded


def encodings(markets: tuple[Market, ...]) -> list[bytes]:
    """The same content, canonical and otherwise."""
    rows = [{"market": m.market, "specifier": m.specifier, "outcomes": dict(m.outcomes)} for m in markets]
    reordered = [
        {
            "outcomes": dict(reversed(list(r["outcomes"].items()))),
            "specifier": r["specifier"],
            "market": r["market"],
        }
        for r in reversed(rows)
    ]
    whole = [
        {**r, "outcomes": {k: int(v) if v == int(v) else v for k, v in r["outcomes"].items()}} for r in rows
    ]
    return [
        canonical_markets(markets),
        msgpack.packb({"markets": reordered}),
        msgpack.packb({"markets": whole}),
    ]


DATA = [encodings(markets) for markets in CONTENTS] + [[b"\xc1", msgpack.packb({"markets": [{"market": 1}]})]]
FINGERPRINTS = {fingerprint(canonical_markets(markets)): i for i, markets in enumerate(CONTENTS)}


@dataclass(frozen=True)
class Published:
    number: int  # its stream entry: a redelivery has the same number
    ts: int
    content: int
    data: bytes

    def entry(self, deliveries: int) -> Entry:
        fields = {b"v": b"1", b"event": FEED[0].encode(), b"bookmaker": FEED[1].encode()}
        fields |= {b"ts": str(self.ts).encode(), b"data": self.data}
        return Entry("s:0", f"{self.number}-0".encode(), fields, deliveries)


@st.composite
def published(draw: st.DrawFn, in_order: bool) -> list[Published]:
    """A feed's entries in arrival order, with redeliveries of earlier ones among them."""
    count = draw(st.integers(1, 14))
    times = draw(st.lists(st.integers(0, 6), min_size=count, max_size=count))
    if in_order:
        times = sorted(times)
    entries = []
    for number, offset in enumerate(times):
        content = draw(st.integers(0, BROKEN))
        data = draw(st.sampled_from(DATA[content]))
        entries.append(Published(number, TS + offset * 1000, content, data))
    for _ in range(draw(st.integers(0, 4))):
        again = draw(st.sampled_from(entries))
        # a redelivery comes after its first delivery
        entries.insert(draw(st.integers(entries.index(again) + 1, len(entries))), again)
    return entries


def batches_of(entries: list[Published], cuts: list[int]) -> list[list[Published]]:
    points = sorted({0, len(entries), *(c % (len(entries) + 1) for c in cuts)})
    return [entries[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@dataclass
class Row:
    captured: int
    confirmed: int
    content: int


def store(batches: list[list[Published]]) -> list[Row]:
    """Plan each batch against what the previous ones left, as the writer does under its row lock."""
    rows: list[Row] = []
    fingerprints: list[bytes] = []
    deliveries: dict[int, int] = {}
    for batch in batches:
        entries = []
        for p in batch:
            deliveries[p.number] = deliveries.get(p.number, 0) + 1
            entries.append(p.entry(deliveries[p.number]))
        parsed, poison = parse(entries, max_entry_bytes=1_048_576, max_deliveries=100)
        assert not poison, poison
        state = (
            {"|".join(FEED): FeedState(len(rows) - 1, fingerprints[-1], rows[-1].confirmed)} if rows else {}
        )
        apply(plan(parsed, state, memo_decoder(payload_decoder(decode_data))), rows, fingerprints)
    return rows


def apply(result: Plan, rows: list[Row], fingerprints: list[bytes]) -> None:
    for snapshot_id, ts in result.confirms.items():
        rows[snapshot_id].confirmed = max(rows[snapshot_id].confirmed, ts)
    for new in result.inserts:
        rows.append(Row(new.captured_at_ms, new.last_confirmed_ms, FINGERPRINTS[new.fingerprint]))
        fingerprints.append(new.fingerprint)


def oracle(batches: list[list[Published]]) -> list[Row]:
    """One entry at a time, each batch in capture order: older than the last confirmation is stale, equal
    to it a duplicate, broken data set aside, equal content a confirmation, anything else a new row."""
    rows: list[Row] = []
    for batch in batches:
        for p in sorted(batch, key=lambda p: p.ts):
            if rows and p.ts <= rows[-1].confirmed or p.content == BROKEN:
                continue
            if rows and rows[-1].content == p.content:
                rows[-1].confirmed = p.ts
            else:
                rows.append(Row(p.ts, p.ts, p.content))
    return rows


@given(published(in_order=False), st.lists(st.integers(0, 40), max_size=6))
def test_any_arrival_order_and_batching_stores_what_the_oracle_does(
    entries: list[Published], cuts: list[int]
) -> None:
    new_example()
    counted()
    batches = batches_of(entries, cuts)
    assert store(batches) == oracle(batches)


@given(
    published(in_order=True),
    st.lists(st.integers(0, 40), max_size=6),
    st.lists(st.integers(0, 40), max_size=6),
)
def test_entries_in_capture_order_store_the_same_history_however_they_are_batched(
    entries: list[Published], cuts: list[int], other_cuts: list[int]
) -> None:
    new_example()
    counted()
    # Captured in order (redeliveries aside), the history cannot depend on the batching: it is the oracle's
    # with every entry a batch of its own
    one_by_one = oracle([[p] for p in entries])
    assert store(batches_of(entries, cuts)) == one_by_one
    assert store(batches_of(entries, other_cuts)) == one_by_one
