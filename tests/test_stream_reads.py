"""Reads of a shard on the real Redis: bounded by bytes as well as entries, from new entries or history."""

from __future__ import annotations

import redis

from consumer.stream import NEW, OWN_HISTORY, ShardStreams
from shared.keys import Keys

KB = 1024


def fill(client: redis.Redis, stream: str, sizes: list[int]) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for i, size in enumerate(sizes):
        pipe.xadd(stream, {"i": i, "data": b"x" * size})
    return list(pipe.execute())


def owned(client: redis.Redis, keys: Keys, name: str) -> ShardStreams:
    client.set(keys.lease(0), name)
    streams = ShardStreams(client, keys, name)
    streams.ensure_groups()
    return streams


def test_a_read_stops_short_of_its_byte_budget_whatever_the_entry_sizes(
    client: redis.Redis, keys: Keys
) -> None:
    # Given 40 entries of 300 kB and some small ones between them, and a read allowed 1000 entries but only
    # 2 MB, with entries of up to 1 MB allowed
    sizes = [300 * KB if i % 3 else 2 * KB for i in range(60)]
    ids = fill(client, keys.shard(0), sizes)
    streams = owned(client, keys, "me")
    budget, largest = 2048 * KB, 1024 * KB
    # When the shard is read again and again until it is empty
    reads: list[list[bytes]] = []
    while entries := streams.read({0: NEW}, 1000, budget, largest).entries:
        # Then no read carries more than its budget (and field names are small change)
        assert sum(len(e.fields[b"data"]) for e in entries if e.fields) <= budget
        reads.append([e.entry_id for e in entries])
    # And every entry was read once, in order, in reads that each took more than one entry where two fit
    assert [i for r in reads for i in r] == ids
    assert max(len(r) for r in reads) > 1


def test_history_is_read_in_pages_from_the_last_id_without_repeats(client: redis.Redis, keys: Keys) -> None:
    # Given 30 entries of 100 kB delivered to us and not acknowledged (we crashed, say)
    ids = fill(client, keys.shard(0), [100 * KB] * 30)
    streams = owned(client, keys, "me")
    client.xreadgroup(keys.group, "me", {keys.shard(0): ">"}, count=100)
    # When our own history is read with a budget of 1 MB and entries of up to 400 kB allowed: pages of two
    # entries at first, then of one, as the budget left shrinks
    entries = streams.read({0: OWN_HISTORY}, 10, 1024 * KB, 400 * KB).entries
    # Then the pages went on after each other: the first entries, in order, none twice, within the budget
    assert [e.entry_id for e in entries] == ids[: len(entries)]
    assert 2 < len(entries) < 10
    assert sum(len(e.fields[b"data"]) for e in entries if e.fields) <= 1024 * KB


def test_a_budget_below_one_entry_still_reads_one(client: redis.Redis, keys: Keys) -> None:
    ids = fill(client, keys.shard(0), [300 * KB] * 3)
    streams = owned(client, keys, "me")
    assert [e.entry_id for e in streams.read({0: NEW}, 100, 10 * KB, 1024 * KB).entries] == ids[:1]


def sixteen_shards_of_small_entries(client: redis.Redis, keys: Keys) -> ShardStreams:
    """16 shards leased to us, with 20 entries of 3 kB each."""
    sixteen = Keys(keys.stream, keys.group, 16)
    for n in range(16):
        client.set(sixteen.lease(n), "me")
        fill(client, sixteen.shard(n), [3 * KB] * 20)
    streams = ShardStreams(client, sixteen, "me")
    streams.ensure_groups()
    return streams


def test_the_byte_budget_is_the_whole_reads_so_many_shards_still_read_full_batches(
    client: redis.Redis, keys: Keys
) -> None:
    # Given 16 shards with 20 small entries each, and a budget that split 16 ways would be below the
    # largest entry allowed (a share per shard would read one entry from each)
    streams = sixteen_shards_of_small_entries(client, keys)
    # When all 16 are read with 16 MB and entries of up to 1 MB allowed
    entries = streams.read(dict.fromkeys(range(16), NEW), 20, 16 * 1024 * KB, 1024 * KB).entries
    # Then every entry of every shard came in that one read
    assert len(entries) == 16 * 20


def test_the_byte_budget_bounds_a_read_of_many_shards_as_a_whole(client: redis.Redis, keys: Keys) -> None:
    # Given 16 shards of 20 entries of 3 kB each (960 kB in all)
    streams = sixteen_shards_of_small_entries(client, keys)
    # When they are read with a budget of 100 kB and entries of up to 10 kB allowed
    entries = streams.read(dict.fromkeys(range(16), NEW), 20, 100 * KB, 10 * KB).entries
    # Then the read as a whole stayed within it, and still took more than one shard's worth
    assert sum(len(e.fields[b"data"]) for e in entries if e.fields) <= 100 * KB
    assert len(entries) > 20


def test_a_history_the_budget_left_unread_is_not_taken_for_drained(client: redis.Redis, keys: Keys) -> None:
    # Given two shards, each with entries of 600 kB delivered to us and not acknowledged
    for n in range(2):
        client.set(keys.lease(n), "me")
        fill(client, keys.shard(n), [600 * KB] * 3)
    streams = ShardStreams(client, keys, "me")
    streams.ensure_groups()
    for n in range(2):
        client.xreadgroup(keys.group, "me", {keys.shard(n): ">"}, count=100)
    # When both histories are read with a budget that the first shard read uses up
    result = streams.read({0: OWN_HISTORY, 1: OWN_HISTORY}, 10, 1024 * KB, 1024 * KB)
    # Then only one shard was read, and the other is not reported drained (its entries come first)
    assert len({e.stream for e in result.entries}) == 1
    assert result.drained_history == set()
    # And the next read starts at the other shard
    following = streams.read({0: OWN_HISTORY, 1: OWN_HISTORY}, 10, 1024 * KB, 1024 * KB)
    assert {e.stream for e in following.entries} != {e.stream for e in result.entries}
