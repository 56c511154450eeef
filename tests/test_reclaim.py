"""Reclaiming a dead consumer's entries on the real Redis: the whole pending list, however long."""

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
    claimed, deleted = ShardStreams(client, keys, "heir").claim_idle(0, min_idle_ms=0)
    # Then every entry moved to the new owner, and none was left behind with the dead one
    summary = client.xpending(stream, keys.group)
    held = {c["name"]: int(c["pending"]) for c in summary["consumers"]}
    assert claimed == 2_500
    assert deleted == []
    assert held == {b"heir": 2_500}
