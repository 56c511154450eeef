"""A group's backlog on the real Redis: exact within a page, Redis's lag (never below the truth) beyond."""

from __future__ import annotations

from typing import Any

import redis

from shared.backlog import PAGE, group_backlog
from shared.keys import Keys
from tests.support import fill, read


def group_row(client: redis.Redis, keys: Keys, stream: str) -> dict[str, Any]:
    return next(g for g in client.xinfo_groups(stream) if g["name"].decode() == keys.group)


def truly_undelivered(client: redis.Redis, keys: Keys, stream: str) -> int:
    last = group_row(client, keys, stream)["last-delivered-id"].decode()
    return len(client.xrange(stream, min="(" + last, max="+"))


def pages_read(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("xrange", "xrevrange"))


def test_a_small_backlog_is_counted_even_where_the_hard_cap_made_redis_lag_wrong(
    client: redis.Redis, keys: Keys
) -> None:
    # Given a group that read 30 of 100 entries, then a hard-cap trim that deleted 20 it had not read
    stream = keys.shard(0)
    fill(client, stream, 100)
    client.xgroup_create(stream, keys.group, id="0")
    read(client, keys, "c1", stream, 30)
    client.xtrim(stream, maxlen=50, approximate=False)
    read(client, keys, "c1", stream, 10)
    expected = truly_undelivered(client, keys, stream)  # Redis 7.0's lag still counts the 20 trimmed
    # When the backlog is counted
    pending, undelivered = group_backlog(client, stream, keys.group)
    # Then it is the entries after the last-delivered id, counted from the stream
    assert undelivered == expected
    assert pending == 40


def test_a_large_backlog_is_redis_lag_after_reading_one_page(client: redis.Redis, keys: Keys) -> None:
    # Given a group that read 300 of three pages of entries
    stream = keys.shard(0)
    fill(client, stream, 3 * PAGE)
    client.xgroup_create(stream, keys.group, id="0")
    read(client, keys, "c1", stream, 300)
    read_before = pages_read(client)
    # When the backlog is counted
    _, undelivered = group_backlog(client, stream, keys.group)
    # Then it is exact, and only one page of the 2,700 entries was read
    assert pages_read(client) == read_before + 1
    assert undelivered == truly_undelivered(client, keys, stream)


def test_a_large_backlog_after_the_hard_cap_is_never_below_the_truth(client: redis.Redis, keys: Keys) -> None:
    # Given a group that read 100 of three pages, a hard-cap trim of a page (900 it had not read), and a
    # group that read on past the cut
    stream = keys.shard(0)
    fill(client, stream, 3 * PAGE)
    client.xgroup_create(stream, keys.group, id="0")
    read(client, keys, "c1", stream, 100)
    client.xtrim(stream, maxlen=2 * PAGE, approximate=False)
    read(client, keys, "c1", stream, 500)
    # When the backlog is counted
    _, undelivered = group_backlog(client, stream, keys.group)
    # Then it is at least what is left to read, and overstates it at most by what the trim deleted unread
    truth = truly_undelivered(client, keys, stream)
    assert truth <= undelivered <= truth + PAGE - 100
    assert undelivered <= client.xlen(stream)


def test_a_group_at_the_end_of_its_stream_has_nothing_to_read_whatever_its_lag_says(
    client: redis.Redis, keys: Keys
) -> None:
    # Given a hard-cap trim of more than a page the group had not read, then the group reading to the end,
    # with the entries it read still in the stream (acknowledged, not trimmed yet)
    stream = keys.shard(0)
    fill(client, stream, 4 * PAGE)
    client.xgroup_create(stream, keys.group, id="0")
    read(client, keys, "c1", stream, 100)
    client.xtrim(stream, maxlen=2 * PAGE, approximate=False)
    read(client, keys, "c1", stream, 2 * PAGE)
    # When the backlog is counted
    _, undelivered = group_backlog(client, stream, keys.group)
    # Then nothing is left to read: a drained shard shows as drained (resharding waits for that)
    assert undelivered == truly_undelivered(client, keys, stream)
