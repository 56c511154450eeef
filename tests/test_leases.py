"""Shard leases on the real Redis: balanced shares, renewal on a thread, and membership on Redis's clock."""

from __future__ import annotations

import time

import pytest
import redis

from consumer.leases import Leases, quota
from shared.keys import Keys


@pytest.mark.parametrize("shards", [1, 4, 16, 17])
def test_the_shares_of_any_number_of_consumers_add_up_and_differ_by_at_most_one(shards: int) -> None:
    for consumers in range(1, 21):
        live = [f"c{i}" for i in range(consumers)]
        shares = [quota(shards, live, name) for name in live]
        assert sum(shares) == shards
        assert set(shares) <= {shards // consumers, -(-shards // consumers)}


def settle(members: list[Leases], rounds: int = 10) -> None:
    """Rebalance every member in turn, giving surplus shards back at once, until nothing changes.

    Every member heartbeats first, as each would within one renewal period, so all see the same members.
    """
    for leases in members:
        leases.renew()
    for _ in range(rounds):
        changed = False
        for leases in members:
            gained, surplus = leases.rebalance(force=True)
            leases.release(surplus, "rebalance")
            changed = changed or bool(gained or surplus)
        if not changed:
            return
    raise AssertionError("the leases did not settle")


def holdings(members: list[Leases]) -> list[int]:
    return sorted(len(m.owned) for m in members)


def test_consumers_joining_one_by_one_settle_on_floor_or_ceil_shares(client: redis.Redis, keys: Keys) -> None:
    sixteen = Keys(keys.stream, keys.group, 16)
    members: list[Leases] = []
    for consumers in range(1, 7):
        # Given one more consumer
        members.append(Leases(client, sixteen, f"c{consumers}", 30_000, 60.0))
        # When all rebalance
        settle(members)
        # Then every one holds floor(S/C) or ceil(S/C) shards, and every shard has exactly one owner
        assert set(holdings(members)) <= {16 // consumers, -(-16 // consumers)}
        owned = [n for m in members for n in m.owned]
        assert sorted(owned) == list(range(16))


def test_a_consumer_that_stops_renewing_gives_its_shards_to_the_others(
    client: redis.Redis, keys: Keys
) -> None:
    # Given three consumers with balanced shares of 16 shards, leases of one second
    sixteen = Keys(keys.stream, keys.group, 16)
    members = [Leases(client, sixteen, f"c{i}", 1000, 60.0) for i in range(3)]
    settle(members)
    assert holdings(members) == [5, 5, 6]
    # When one of them goes silent (a crash: no release) and its leases and membership expire
    dead, alive = members[0], members[1:]
    deadline = time.monotonic() + 10
    while any(client.exists(sixteen.lease(n)) for n in dead.owned) and time.monotonic() < deadline:
        for leases in alive:
            leases.renew()
        time.sleep(0.1)
    settle(alive)
    # Then the two others share all 16 shards, 8 each
    assert holdings(alive) == [8, 8]
    assert sorted(n for m in alive for n in m.owned) == list(range(16))


def test_renewal_on_its_thread_keeps_the_leases_while_the_main_loop_is_busy(
    client: redis.Redis, keys: Keys
) -> None:
    # Given a consumer holding every shard, with leases of one second renewed by its thread
    leases = Leases(client, keys, "busy", 1000, 60.0)
    leases.rebalance(force=True)
    leases.start_renewing()
    try:
        # When its main loop is busy for three lease lifetimes (a slow commit)
        time.sleep(3.0)
        # Then it still holds every lease
        assert leases.take_lost() == set()
        assert [client.get(keys.lease(n)) for n in range(keys.shards)] == [b"busy"] * keys.shards
    finally:
        leases.release_all()


def test_renewal_stops_when_the_main_loop_has_stalled(client: redis.Redis, keys: Keys) -> None:
    # Given a consumer whose renewal gives up after the main loop is silent for one and a half seconds
    leases = Leases(client, keys, "hung", 1000, 1.5)
    leases.rebalance(force=True)
    leases.start_renewing()
    try:
        # When the main loop shows no sign of life past that and one lease lifetime more
        deadline = time.monotonic() + 10
        while any(client.exists(keys.lease(n)) for n in range(keys.shards)) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Then its leases have lapsed, for another consumer to take
        assert not any(client.exists(keys.lease(n)) for n in range(keys.shards))
        # And when the main loop wakes, it learns that it lost them
        leases.renew()
        assert leases.take_lost() == set(range(keys.shards))
    finally:
        leases.release_all()


def test_a_consumer_whose_clock_runs_ahead_removes_no_one(
    client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two consumers sharing the shards
    a, b = Leases(client, keys, "a", 30_000, 60.0), Leases(client, keys, "b", 30_000, 60.0)
    settle([a, b])
    # When b's clock runs a minute ahead and it keeps heartbeating
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 60)
    for _ in range(3):
        b.renew()
        settle([a, b])
    # Then a is still a live member and keeps its share
    assert sorted(m.decode() for m in client.zrange(keys.members, 0, -1)) == ["a", "b"]
    assert holdings([a, b]) == [1, 1]


def test_surplus_shards_stay_owned_until_released(client: redis.Redis, keys: Keys) -> None:
    # Given consumer a holding both shards, and consumer b arriving
    a, b = Leases(client, keys, "a", 30_000, 60.0), Leases(client, keys, "b", 30_000, 60.0)
    a.rebalance(force=True)
    b.rebalance(force=True)
    # When a rebalances, it names one shard above its share, the highest, but still holds it
    _, surplus = a.rebalance(force=True)
    assert surplus == {1} and a.owned == {0, 1}
    assert client.get(keys.lease(1)) == b"a"
    # And when it gives it back, b takes it at its next rebalance
    a.release(surplus, "rebalance")
    gained, _ = b.rebalance(force=True)
    assert gained == {1} and b.owned == {1}


def test_the_members_set_expires_a_lease_ttl_after_the_last_heartbeat(
    client: redis.Redis, keys: Keys
) -> None:
    # Given a consumer that heartbeats, and is then killed without leaving (no ZREM)
    a = Leases(client, keys, "a", 30_000, 60.0)
    settle([a])
    # Then the members set expires once every member in it would be silent for a lease TTL
    ttl_ms = client.pttl(keys.members)
    assert 0 < ttl_ms <= 30_000
