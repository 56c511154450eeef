"""The batch bookkeeping script: one atomic step, and harmless when sent twice."""

from __future__ import annotations

import redis

from consumer.plan import Entry, Poison
from consumer.stream import Outcome, ShardStreams
from shared.keys import Keys
from tests.support import counters, dead_letters


def test_bookkeeping_sent_again_after_a_lost_reply_counts_and_dead_letters_nothing_twice(
    client: redis.Redis, keys: Keys
) -> None:
    # Given three entries read by a consumer, one of them poison, and the outcome of their batch
    stream = keys.shard(0)
    client.xgroup_create(stream, keys.group, id="0", mkstream=True)
    ids = [client.xadd(stream, {"n": n}) for n in range(3)]
    client.xreadgroup(keys.group, "c1", {stream: ">"})
    entries = [Entry(stream, i, {b"n": b"x"}, 1) for i in ids]
    outcome = Outcome(dead=[Poison(entries[1], "broken")], fingerprints={stream: {"e|b": (b"f" * 16, 1000)}})
    outcome.ack(entries)
    outcome.count("changed", 2)
    outcome.count("dead_lettered", 1)
    streams = ShardStreams(client, keys, "c1")
    # When it is recorded, and recorded again (the first reply was lost: the retry cannot tell)
    streams.finish(outcome)
    streams.finish(outcome)
    # Then everything is acknowledged, and counted and dead-lettered once
    assert client.xpending(stream, keys.group)["pending"] == 0
    stats = counters(client, keys)
    assert (stats["changed"], stats["dead_lettered"]) == (2, 1)
    letters = dead_letters(client, keys)
    assert [f[b"dead_reason"] for _, f in letters] == [b"broken"]
    assert client.hexists(keys.fingerprints(0), "e|b")


def test_bookkeeping_of_several_shards_is_recorded_after_the_server_lost_its_scripts(
    client: redis.Redis, keys: Keys
) -> None:
    # Given entries read on three shards, and a server that then lost its script cache (a restart)
    outcome = Outcome()
    for n in range(3):
        stream = keys.shard(n)
        client.xgroup_create(stream, keys.group, id="0", mkstream=True)
        ids = [client.xadd(stream, {"n": i}) for i in range(n + 1)]
        client.xreadgroup(keys.group, "c1", {stream: ">"})
        outcome.ack(Entry(stream, i, {b"n": b"x"}, 1) for i in ids)
        outcome.fingerprint(stream, f"e{n}|b", (b"f" * 16, 1000 + n))
    outcome.count("changed", 6)
    streams = ShardStreams(client, keys, "c1")
    client.script_flush()
    # When the batch's bookkeeping is recorded
    streams.finish(outcome)
    # Then every shard's entries are acknowledged and its fingerprints stored, and the batch counted once
    assert [client.xpending(keys.shard(n), keys.group)["pending"] for n in range(3)] == [0, 0, 0]
    assert all(client.hexists(keys.fingerprints(n), f"e{n}|b") for n in range(3))
    assert counters(client, keys)["changed"] == 6
