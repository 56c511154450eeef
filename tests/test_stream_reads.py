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
