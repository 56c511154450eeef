"""Redis memory as the pipeline reads it: shares, policies at risk, and the smoothed growth."""

from __future__ import annotations

import math

import pytest

from shared.memory import Growth, RedisMemory, eviction_risk, memory_from_info


def test_info_memory_is_read_into_used_max_and_policy() -> None:
    info = {"used_memory": "1048576", "maxmemory": 4194304, "maxmemory_policy": "noeviction", "other": 1}
    memory = memory_from_info(info)
    assert (memory.used_bytes, memory.max_bytes, memory.policy) == (1_048_576, 4_194_304, "noeviction")
    assert memory.share == 0.25 and not memory.over(0.8) and memory.over(0.25)


def test_without_maxmemory_there_is_no_share_and_nothing_is_ever_over() -> None:
    memory = RedisMemory(10**9, 0, "noeviction")
    assert memory.share is None and not memory.over(0.01)


@pytest.mark.parametrize(
    ("policy", "at_risk"),
    [
        ("noeviction", ()),
        ("volatile-lru", ("shard leases",)),
        ("volatile-ttl", ("shard leases",)),
        (
            "allkeys-lfu",
            ("shard streams", "dead letters", "fingerprints", "shard leases", "members", "counters"),
        ),
    ],
)
def test_each_policy_names_what_it_could_evict(policy: str, at_risk: tuple[str, ...]) -> None:
    memory = RedisMemory(1, 2, policy)
    assert memory.keys_at_risk == at_risk
    assert (eviction_risk(memory) is None) == (not at_risk)


def test_growth_is_smoothed_over_the_horizon_and_gives_the_time_until_full() -> None:
    # Given memory rising by 1 MB every 5 s, sampled for five minutes
    growth = Growth(horizon_s=60)
    for step in range(61):
        growth.sample(step * 1_000_000, now_s=step * 5.0)
    # Then the estimate is near 200 kB/s, and 10 MB left takes about 50 s
    assert growth.bytes_per_s == pytest.approx(200_000, rel=0.1)
    assert growth.seconds_until(RedisMemory(90_000_000, 100_000_000, "noeviction")) == pytest.approx(
        50, rel=0.1
    )


def test_a_burst_moves_the_estimate_only_by_its_share_of_the_horizon() -> None:
    # Given a steady Redis, then one 6 MB cycle published in 5 s
    growth = Growth(horizon_s=60)
    growth.sample(50_000_000, now_s=0.0)
    growth.sample(50_000_000, now_s=5.0)
    growth.sample(56_000_000, now_s=10.0)
    # Then the estimate is a twelfth of the burst's rate, not all of it
    assert growth.bytes_per_s == pytest.approx(6_000_000 / 5 / 12)


def test_shrinking_or_unlimited_memory_is_never_full() -> None:
    growth = Growth()
    growth.sample(2_000_000, 0.0)
    growth.sample(1_000_000, 30.0)
    assert growth.bytes_per_s < 0
    assert math.isinf(growth.seconds_until(RedisMemory(1_000_000, 2_000_000, "noeviction")))
    growth.bytes_per_s = 1000.0
    assert math.isinf(growth.seconds_until(RedisMemory(1_000_000, 0, "noeviction")))
