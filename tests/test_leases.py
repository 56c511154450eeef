"""Shard leases on the real Redis: a fair share, except for shards that hold a batch being retried."""

from __future__ import annotations

import pytest
import redis

from consumer.leases import Leases
from shared.keys import Keys


@pytest.mark.parametrize(("keep", "kept"), [((), False), ({1}, True)], ids=["no batch", "batch on shard 1"])
def test_shards_kept_for_a_batch_in_flight_are_not_given_up_for_fairness(
    client: redis.Redis, keys: Keys, keep: set[int], kept: bool
) -> None:
    # Given consumer a holding both shards, and consumer b arriving, so a's fair share is one shard
    a, b = Leases(client, keys, "a", 30_000), Leases(client, keys, "b", 30_000)
    a.maintain(force=True)
    assert a.owned == {0, 1}
    b.maintain(force=True)
    # When a rebalances, with or without a batch of shard 1 being retried (the highest shard goes first)
    a.maintain(force=True, keep=keep)
    # Then it is down to its fair share, and holds shard 1 exactly when a batch of it is in flight
    assert len(a.owned) == 1
    assert (1 in a.owned) is kept
