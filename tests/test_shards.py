"""The shard state machine alone: what to read next, when a read-ahead batch is still good, what goes."""

from __future__ import annotations

from consumer.shards import ShardStates, State


def live(*shards: int) -> ShardStates:
    """States with these shards gained and taken over, nothing claimed: all live."""
    states = ShardStates()
    states.gained(shards)
    for n in shards:
        assert states.history_drained(n)
        states.claimed(n, 0)
    return states


def test_a_gained_shard_reads_its_own_history_then_claims_then_goes_live() -> None:
    states = ShardStates()
    states.gained({0})
    assert states.next_read() == {0: State.OWN_HISTORY}
    assert states.history_drained(0)
    assert states.state(0) is State.CLAIMING
    states.claimed(0, 0)
    assert states.next_read() == {0: State.LIVE}


def test_entries_claimed_from_others_are_read_from_our_history_before_new_ones() -> None:
    states = ShardStates()
    states.gained({0})
    states.history_drained(0)
    # When the claim moved entries into our pending list
    states.claimed(0, 5)
    # Then the shard reads its history again, and goes live only after a claim that moves nothing
    assert states.next_read() == {0: State.OWN_HISTORY}
    assert states.history_drained(0)
    states.claimed(0, 0)
    assert states.live == {0}


def test_a_shard_lost_and_regained_at_once_starts_over_from_its_history() -> None:
    # Given a live shard, with a batch of it read ahead
    states = live(0, 1)
    # When its lease is lost and regained before the batch is applied (another consumer may have read
    # some of its entries in between)
    states.lost({1})
    states.gained({1})
    # Then the batch read ahead is no longer valid, and the shard reads its own history first
    assert not states.still_valid({1})
    assert states.still_valid({0})
    assert states.next_read() == {0: State.LIVE, 1: State.OWN_HISTORY}
    assert not states.may_read_ahead()


def test_nothing_is_read_ahead_while_a_history_is_being_read() -> None:
    states = live(0)
    assert states.may_read_ahead()
    states.gained({1})
    assert not states.may_read_ahead()
    assert not ShardStates().may_read_ahead()


def test_a_dropped_batch_or_a_failed_read_sends_its_shards_back_to_their_history() -> None:
    states = live(0, 1, 2)
    states.reread({1})
    assert states.next_read() == {0: State.LIVE, 1: State.OWN_HISTORY, 2: State.LIVE}
    states.reread_all()
    assert set(states.next_read().values()) == {State.OWN_HISTORY}


def test_a_shard_above_our_share_is_neither_read_nor_read_ahead_and_goes_once_nothing_holds_it() -> None:
    # Given live shards 0-2, of which 2 is above our share
    states = live(0, 1, 2)
    states.above_share({2})
    # Then it is not read, nothing is read ahead, and a batch of it read ahead is applied and keeps it
    assert states.next_read() == {0: State.LIVE, 1: State.LIVE}
    assert not states.may_read_ahead()
    assert not states.may_release(in_hand={2})
    assert states.still_valid({1, 2})
    # And once no batch holds it, it is released and forgotten
    assert states.may_release(in_hand={0})
    assert states.released() == {2}
    assert states.held == {0, 1}
    assert states.may_read_ahead()


def test_a_shard_being_given_back_is_not_sent_back_to_its_history() -> None:
    states = live(0, 1)
    states.above_share({1})
    states.reread_all()
    assert states.releasing == {1}
    assert states.next_read() == {0: State.OWN_HISTORY}


def test_reports_about_shards_not_held_change_nothing() -> None:
    states = live(0)
    assert not states.history_drained(3)
    states.claimed(3, 0)
    states.above_share({3})
    states.lost({3})
    assert states.held == {0} and states.live == {0}


def test_following_the_leases_drops_what_went_and_restarts_what_came_back() -> None:
    # Given live shards 0 and 1
    states = live(0, 1)
    # When the leases say 1 went, 2 came, and 0 was lost and regained in between
    states.follow(owned={0, 2}, gained={0, 2})
    # Then 1 is gone, and 0 and 2 read their own history first
    assert states.next_read() == {0: State.OWN_HISTORY, 2: State.OWN_HISTORY}
