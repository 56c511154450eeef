"""The pure planner: each feed's entries applied in capture-time order to its stored state."""

from __future__ import annotations

from collections.abc import Callable

from consumer.plan import EMPTY_FEED, Decoder, Entry, FeedState, Parsed, memo_decoder, parse, plan
from shared.wire import Decoded, Market, Snapshot, encode, market_row
from shared.wire_data import decode_data


def payload_decoder(decode_data: Callable[..., Decoded]) -> Decoder:
    """An entry decoder of a data decoder that sees only the payload, such as decode_data itself."""
    return lambda p: decode_data(p.envelope.data, digest=p.digest)


TS = 1_795_000_000_000


def entry(odds: float, ts: int, event: str = "e1", n: int = 0) -> Entry:
    fields = encode(Snapshot(event, "bet9ja", ts, (Market("1X2", "", {"1": odds, "2": 3.0}),)))
    return Entry("s:0", f"{ts}-{n}".encode(), {k.encode(): v for k, v in fields.items()}, 1)


def parsed(*entries: Entry) -> list[Parsed]:
    result, poison = parse(entries, 1_000_000, 10)
    assert not poison
    return result


class CountingDecoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, p: Parsed) -> Decoded:
        self.calls += 1
        return decode_data(p.envelope.data)


def state_after(p: Parsed, snapshot_id: int = 7) -> FeedState:
    return FeedState(snapshot_id, decode_data(p.envelope.data).fingerprint, p.envelope.ts_ms)


def test_runs_of_equal_content_become_one_snapshot_each() -> None:
    # Given a new feed seen with odds 2.0, 2.0, 2.5, 2.5, 2.0 (delivered shuffled)
    items = parsed(
        entry(2.5, TS + 3), entry(2.0, TS + 1), entry(2.0, TS + 5), entry(2.0, TS + 2), entry(2.5, TS + 4)
    )
    # When planned against an empty state
    result = plan(items, {}, memo_decoder(payload_decoder(decode_data)))
    # Then three snapshots, each confirmed until the end of its run
    assert [(s.captured_at_ms - TS, s.last_confirmed_ms - TS) for s in result.inserts] == [
        (1, 2),
        (3, 4),
        (5, 5),
    ]
    assert result.unchanged == 2 and not result.confirms


def test_unchanged_snapshot_is_confirmed_without_decoding() -> None:
    # Given a feed whose stored fingerprint equals the new entry's content
    first, second = parsed(entry(2.0, TS), entry(2.0, TS + 10))
    decoder = CountingDecoder()
    # When the later entry is planned
    result = plan([second], {first.feed: state_after(first)}, decoder)
    # Then it only moves last_confirmed_at, and its markets were never decoded
    assert result.confirms == {7: TS + 10}
    assert not result.inserts and decoder.calls == 0


def test_entries_older_than_the_stored_state_are_stale_or_duplicates() -> None:
    # Given a feed stored as of TS + 10
    stored, older, same_time = parsed(entry(2.0, TS + 10), entry(9.0, TS + 5), entry(2.0, TS + 10, n=1))
    # When an older entry and a repeat of the stored one arrive
    result = plan(
        [older, same_time], {stored.feed: state_after(stored)}, memo_decoder(payload_decoder(decode_data))
    )
    # Then neither writes anything
    assert result.stale == [older] and result.duplicates == [same_time]
    assert not result.inserts and not result.confirms


def test_undecodable_data_is_poison_and_does_not_move_the_state() -> None:
    # Given a good entry, a corrupt one and another good one for one feed
    good1, bad, good2 = parsed(entry(2.0, TS), entry(2.0, TS + 1), entry(3.0, TS + 2))
    corrupt = type(bad.envelope)(bad.envelope.event, bad.envelope.bookmaker, TS + 1, b"\xc1")
    bad = Parsed(bad.entry, corrupt, b"corrupt", bad.feed)
    # When planned
    result = plan([good1, bad, good2], {}, memo_decoder(payload_decoder(decode_data)))
    # Then the bad one is poison and both good ones are written
    assert [p.entry for p in result.poison] == [bad.entry] and "msgpack" in result.poison[0].reason
    assert [s.captured_at_ms for s in result.inserts] == [TS, TS + 2]


def test_a_decoder_that_breaks_on_some_data_dead_letters_that_entry_only() -> None:
    # Given a decoder with a bug that one payload triggers, among good entries of other feeds
    good, odd = parsed(entry(2.0, TS, event="e1"), entry(3.0, TS, event="e2"))

    def buggy(data: bytes, *, digest: bytes) -> Decoded:
        if data == odd.envelope.data:
            raise TypeError("unhashable type: 'list'")
        return decode_data(data, digest=digest)

    # When planned
    result = plan([good, odd], {}, memo_decoder(payload_decoder(buggy)))
    # Then that entry is poison with the error as its reason, and the other one is written
    assert [p.entry for p in result.poison] == [odd.entry]
    assert "TypeError: unhashable type" in result.poison[0].reason
    assert [s.feed for s in result.inserts] == [good.feed]


def test_final_state_per_feed_is_the_newest_applied() -> None:
    items = parsed(entry(2.0, TS), entry(3.0, TS + 1, event="e2"), entry(2.5, TS + 2))
    result = plan(items, {}, memo_decoder(payload_decoder(decode_data)))
    newest = {p.feed: p for p in items if p.envelope.ts_ms != TS}
    assert {f: ts for f, (_, ts) in result.final.items()} == {f: p.envelope.ts_ms for f, p in newest.items()}
    assert EMPTY_FEED.last_ts_ms < TS


def test_entries_delivered_too_often_are_poison() -> None:
    e = entry(2.0, TS)
    tired = Entry(e.stream, e.entry_id, e.fields, 11)
    ok, poison = parse([tired], 1_000_000, 10)
    assert not ok and "delivered 11 times" in poison[0].reason


def market_entry(ts: int, *markets: Market) -> Entry:
    fields = encode(Snapshot("e1", "bet9ja", ts, markets))
    return Entry("s:0", f"{ts}-0".encode(), {k.encode(): v for k, v in fields.items()}, 1)


def test_a_change_carries_only_the_markets_that_changed_appeared_or_disappeared() -> None:
    # Given a feed stored with three markets
    one_x_two = Market("1X2", "", {"1": 2.0, "X": 3.1, "2": 2.9})
    totals = Market("Over/Under", "total=2.5", {"Over": 1.85, "Under": 1.95})
    btts = Market("BTTS", "", {"Yes": 1.8, "No": 2.0})
    (stored,) = parsed(market_entry(TS, one_x_two, totals, btts))
    decoded = decode_data(stored.envelope.data)
    state = FeedState(7, decoded.fingerprint, TS, {(m.market, m.specifier): m for m in decoded.markets})
    # When the next snapshot moves 1X2, drops Over/Under, keeps BTTS and adds a market, and the one after
    # changes the outcome set of 1X2
    moved = Market("1X2", "", {"1": 2.1, "X": 3.0, "2": 2.9})
    handicap = Market("Asian Handicap", "hcp=-0.5", {"1": 1.9, "2": 1.9})
    two_way = Market("1X2", "", {"1": 2.1, "2": 1.7})
    items = parsed(market_entry(TS + 1, moved, btts, handicap), market_entry(TS + 2, two_way, btts, handicap))
    result = plan(items, {stored.feed: state}, memo_decoder(payload_decoder(decode_data)))
    # Then each new snapshot holds only its changes, a disappeared market as None
    first, second = result.inserts
    assert {k: r and r.odds for k, r in first.changes} == {
        ("1X2", ""): market_row(moved).odds,
        ("Over/Under", "total=2.5"): None,
        ("Asian Handicap", "hcp=-0.5"): market_row(handicap).odds,
    }
    assert [(k, r and r.outcomes) for k, r in second.changes] == [(("1X2", ""), ("1", "2"))]
    # And the feed's markets after the batch are the last snapshot's, for the next batch to compare with
    assert set(result.final_markets[stored.feed]) == {
        ("1X2", ""),
        ("BTTS", ""),
        ("Asian Handicap", "hcp=-0.5"),
    }
