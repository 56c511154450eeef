"""The producer's buffer: bounded, in order, and what it drops when full."""

from __future__ import annotations

from producer.buffer import OLDEST, SUPERSEDED, Pending, SendBuffer
from shared.wire import Snapshot


def entry(feed: str, ts: int) -> Pending:
    return Pending("s:0", {"ts": str(ts).encode()}, Snapshot(feed, "bet9ja", ts, ()))


def queued(buffer: SendBuffer) -> list[tuple[str, bytes]]:
    """What a sender would take, in order (taking and putting back leaves the buffer as it was)."""
    taken = buffer.take(len(buffer))
    buffer.put_back(taken)
    return [(e.feed[0], e.fields["ts"]) for e in taken]


def test_a_full_buffer_drops_a_superseded_snapshot_before_the_only_one_of_another_feed() -> None:
    # Given a buffer of 3 holding a, then b, then a again: a's first snapshot is superseded
    buffer = SendBuffer(3)
    for e in (entry("a", 1), entry("b", 1), entry("a", 2)):
        buffer.append(e)
    # When a snapshot of c arrives
    dropped = buffer.append(entry("c", 1))
    # Then a's superseded snapshot goes, and every feed keeps its newest
    assert dropped == 1 and buffer.dropped == {SUPERSEDED: 1}
    assert queued(buffer) == [("b", b"1"), ("a", b"2"), ("c", b"1")]


def test_with_nothing_superseded_the_oldest_goes() -> None:
    buffer = SendBuffer(2)
    for feed in "abc":
        buffer.append(entry(feed, 1))
    assert buffer.dropped == {OLDEST: 1}
    assert queued(buffer) == [("b", b"1"), ("c", b"1")]


def test_entries_put_back_return_to_the_front_in_order_and_can_be_superseded() -> None:
    # Given two entries taken by a sender, and a newer snapshot of the first feed published meanwhile
    buffer = SendBuffer(3)
    buffer.append(entry("a", 1))
    buffer.append(entry("b", 1))
    taken = buffer.take(2)
    buffer.append(entry("a", 2))
    buffer.append(entry("c", 1))
    # When the send fails and they come back, over the limit
    dropped = buffer.put_back(taken)
    # Then they stand first again, and the superseded one is what the limit drops
    assert dropped == 1 and buffer.dropped == {SUPERSEDED: 1}
    assert queued(buffer) == [("b", b"1"), ("a", b"2"), ("c", b"1")]


def test_entries_being_sent_are_never_dropped() -> None:
    # Given the only entry of a feed taken by a sender
    buffer = SendBuffer(1)
    buffer.append(entry("a", 1))
    taken = buffer.take(1)
    # When newer snapshots of the same feed overflow the buffer meanwhile
    buffer.append(entry("a", 2))
    buffer.append(entry("a", 3))
    # Then what was taken is untouched, and the limit dropped only what stood in the buffer
    assert taken[0].fields == {"ts": b"1"}
    assert queued(buffer) == [("a", b"3")] and sum(buffer.dropped.values()) == 1


def test_a_long_outage_keeps_no_more_than_the_limit() -> None:
    # Given 50 feeds publishing 200 cycles into a buffer of 100
    buffer = SendBuffer(100)
    for ts in range(200):
        for feed in range(50):
            buffer.append(entry(str(feed), ts))
    # Then it holds the limit, every feed's newest snapshot among them, and counted every drop
    held = queued(buffer)
    assert len(held) == len(buffer) == 100
    assert {(str(feed), b"199") for feed in range(50)} <= set(held)
    assert sum(buffer.dropped.values()) == 200 * 50 - 100
