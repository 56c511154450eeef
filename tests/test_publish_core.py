"""What a publisher decides from Redis's replies, without a Redis: pure PublishCore calls."""

from __future__ import annotations

import pytest
import redis

from producer.core import HIGH_WATER, PublishCore, PublishRefused
from shared.keys import Keys
from shared.memory import RedisMemory
from shared.wire import Market, Snapshot

KEYS = Keys("t:snap", "g", 2)
OOM = redis.exceptions.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'.")


def snap(event: str, ts: int) -> Snapshot:
    return Snapshot(event, "bet9ja", ts, (Market("1X2", "", {"1": 2.0 + ts / 100}),))


def core_with(*snapshots: Snapshot, high_water: float = 1.0) -> PublishCore:
    core = PublishCore(KEYS, buffer_limit=100, high_water=high_water)
    core.add(snapshots)
    return core


def left(core: PublishCore) -> list[tuple[bytes, bytes]]:
    taken = core.buffer.take(100)
    core.buffer.put_back(taken)
    return [(e.fields["event"], e.fields["ts"]) for e in taken]


def test_entries_a_full_redis_refused_wait_in_order_and_a_superseded_one_is_given_up() -> None:
    # Given a chunk of a@1, b@1, a@2, c@1 of which a full Redis refused a@1 and c@1
    core = core_with(snap("a", 1), snap("b", 1), snap("a", 2), snap("c", 1))
    chunk = core.next_chunk(now=0.0)
    replies: list[object] = [OOM, b"1-1", b"1-2", OOM, 4]
    # When the replies come back
    sent = core.chunk_done(chunk, replies, now=0.0)
    # Then two reached Redis; a@1, older than the a@2 that got in, would only be stale: it is dropped and
    # counted; c@1 waits at the front; the producer holds back for the full Redis, without raising
    assert sent == 2 and core.total_published == 2
    assert core.buffer.dropped == {"superseded": 1}
    assert left(core) == [(b"c", b"1")]
    assert core.held_back == "out_of_memory" and core.wait_s(now=0.0) > 0


def test_a_chunk_lost_with_the_connection_is_sent_again_whole() -> None:
    core = core_with(snap("a", 1), snap("b", 1))
    chunk = core.next_chunk(now=0.0)
    core.lost_contact(chunk, redis.ConnectionError("reset"), now=0.0)
    assert left(core) == [(b"a", b"1"), (b"b", b"1")] and core.held_back == "unreachable"


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.NoPermissionError("NOPERM this user has no permissions to run the 'xadd' command"),
        redis.AuthenticationError("WRONGPASS invalid username-password pair"),
    ],
)
def test_a_refusal_no_wait_fixes_is_raised_and_the_entries_are_kept(error: redis.RedisError) -> None:
    core = core_with(snap("a", 1))
    chunk = core.next_chunk(now=0.0)
    with pytest.raises(PublishRefused, match="refused"):
        core.chunk_done(chunk, [error, 1], now=0.0)
    assert left(core) == [(b"a", b"1")]


def test_a_refused_info_names_the_permission_and_the_setting_that_turns_the_mark_off() -> None:
    core = core_with(snap("a", 1), high_water=0.8)
    error = redis.exceptions.NoPermissionError(
        "NOPERM User producer has no permissions to run the 'info' command"
    )
    with pytest.raises(PublishRefused, match=r"\+info.*ODDS_PRODUCER_HIGH_WATER=1"):
        core.failed(error, now=0.0)


def test_at_the_high_water_mark_nothing_is_sent_until_memory_is_read_below_it() -> None:
    # Given a mark at 80 % and Redis at 85 % of 100 MB
    core = core_with(snap("a", 1), high_water=0.8)
    assert core.memory_due(now=0.0)
    core.memory_read(RedisMemory(85_000_000, 100_000_000, "noeviction"), now=0.0)
    # Then no chunk goes, and the producer says why
    assert core.next_chunk(now=0.0) == [] and core.held_back == HIGH_WATER
    # When memory is read again at 50 %, then the entry goes
    core.memory_read(RedisMemory(50_000_000, 100_000_000, "noeviction"), now=10.0)
    assert [e.fields["event"] for e in core.next_chunk(now=10.0)] == [b"a"]


def test_bytes_sent_since_the_last_reading_count_towards_the_mark() -> None:
    # Given room for 1 kB below the mark, and three entries of about 1.8 kB
    big = {str(i): 1.5 for i in range(150)}
    core = PublishCore(KEYS, buffer_limit=100, high_water=0.5)
    core.add(Snapshot(e, "bet9ja", 1, (Market("CS", "", big),)) for e in "abc")
    core.memory_read(RedisMemory(49_000, 100_000, "noeviction"), now=0.0)
    first = core.buffer.take(1)
    core.chunk_done(first, [b"1-1", 1], now=0.0)
    # Then, without a new reading, the estimate says the mark is passed: memory must be read first
    assert core.memory_due(now=0.0)
    assert core.next_chunk(now=0.0) == [] and core.held_back == HIGH_WATER


def test_the_published_counter_is_corrected_by_what_did_not_get_in() -> None:
    core = core_with(snap("a", 1), snap("b", 1), snap("c", 1))
    chunk = core.next_chunk(now=0.0)
    assert core.counter_increment(chunk) == 3
    core.chunk_done(chunk, [b"1-1", OOM, OOM, 3], now=0.0)
    # The next increment takes back the two counted too early
    retry = core.buffer.take(100)
    assert core.counter_increment(retry) == len(retry) - 2
