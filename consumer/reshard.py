"""`python -m consumer reshard --to N`: change the shard count of drained streams.

The shard function maps each feed to `crc32 % shards`, so a new count moves most feeds to another shard.
Entries still to do on the old shards would then be read in parallel with the same feeds' newer entries
on their new shards, out of order; so the count changes only while there is nothing to do: the producers
stopped (or holding entries in their buffers), every shard drained, and no consumer alive. The old shard
streams are deleted, because their entries are all done and a shard beyond the new count would show in
status as stray; the fingerprints are per feed and stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.backlog import group_backlog
from shared.keys import Keys
from shared.shard_count import FIELD, existing_shards


class NotDrained(Exception):
    """The streams still hold work, or a consumer is alive: the shard count cannot change now."""


@dataclass(frozen=True)
class Resharded:
    before: int | None  # the recorded count; None when none was recorded
    after: int
    deleted_streams: int


def reshard(client: redis.Redis, keys: Keys, to: int, lease_ttl_ms: int) -> Resharded:
    """Record `to` as the shard count, after checking that nothing is left to do (raises NotDrained).

    The streams are watched while they are checked: an entry published meanwhile aborts the change
    rather than be deleted with the old streams.
    """
    if to < 1:
        raise ValueError("a shard count is at least 1")
    shards = existing_shards(client, keys)
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(keys.meta, *(keys.shard(n) for n in shards))  # type: ignore[no-untyped-call]
        _check_drained(pipe, keys, shards, lease_ttl_ms)
        before = pipe.hget(keys.meta, FIELD)
        pipe.multi()
        for n in shards:
            pipe.delete(keys.shard(n))
        pipe.hset(keys.meta, FIELD, to)
        try:
            pipe.execute()
        except redis.WatchError as exc:
            raise NotDrained("entries were published while checking: stop the producers first") from exc
    return Resharded(None if before is None else int(before), to, len(shards))


def _check_drained(client: redis.client.Pipeline, keys: Keys, shards: list[int], lease_ttl_ms: int) -> None:
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    alive = client.zrange(keys.members, now_ms - lease_ttl_ms, "+inf", byscore=True)
    if alive:
        names = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in alive)
        raise NotDrained(f"consumers are alive ({', '.join(names)}): stop them first")
    for n in shards:
        pending, undelivered = group_backlog(client, keys.shard(n), keys.group)
        if pending or undelivered:
            raise NotDrained(
                f"shard {n} has {undelivered} entries not yet read and {pending} pending: stop the "
                "producers and let the consumers drain it first"
            )
