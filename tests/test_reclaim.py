"""A shard's group on the real Redis: reclaiming a dead consumer's entries, and removing idle consumers."""

from __future__ import annotations

import redis

from consumer.stream import ShardStreams
from shared.keys import Keys


def test_claim_sweeps_the_cursor_until_every_idle_entry_is_ours(client: redis.Redis, keys: Keys) -> None:
    # Given a dead consumer holding far more pending entries than one XAUTOCLAIM call looks at (COUNT*10)
    stream = keys.shard(0)
    pipe = client.pipeline(transaction=False)
    for i in range(2_500):
        pipe.xadd(stream, {"i": i})
    pipe.execute()
    client.xgroup_create(stream, keys.group, id="0")
    client.xreadgroup(keys.group, "dead", {stream: ">"}, count=2_500)
    # When the shard's new owner claims what has been idle
    claimed, deleted = ShardStreams(client, keys, "heir").claim_pending(0)
    # Then every entry moved to the new owner, and none was left behind with the dead one
    summary = client.xpending(stream, keys.group)
    held = {c["name"]: int(c["pending"]) for c in summary["consumers"]}
    assert claimed == 2_500
    assert deleted == []
    assert held == {b"heir": 2_500}


def test_idle_consumers_leave_the_group_only_with_nothing_pending(client: redis.Redis, keys: Keys) -> None:
    # Given a shard read by a consumer that acknowledged everything, one that still holds an entry, and us
    stream = keys.shard(0)
    for i in range(3):
        client.xadd(stream, {"i": i})
    client.xgroup_create(stream, keys.group, id="0")
    done = client.xreadgroup(keys.group, "restarted-long-ago", {stream: ">"}, count=1)
    client.xack(stream, keys.group, done[0][1][0][0])
    client.xreadgroup(keys.group, "holder", {stream: ">"}, count=1)
    client.xreadgroup(keys.group, "owner", {stream: ">"}, count=1)
    # When the shard's owner removes idle consumers (here: any idle time)
    removed = ShardStreams(client, keys, "owner").remove_idle_consumers(0, min_idle_ms=0)
    # Then only the one with nothing pending is gone; the holder keeps its entry for a reclaim
    remaining = {c["name"]: int(c["pending"]) for c in client.xinfo_consumers(stream, keys.group)}
    assert removed == ["restarted-long-ago"]
    assert remaining == {b"holder": 1, b"owner": 1}
