"""`python -m consumer reshard --to N`: change the shard count of drained streams.

The shard function maps each feed to `crc32 % shards`, so a new count moves most feeds to another shard.
Entries still to do on the old shards would then be read in parallel with the same feeds' newer entries
on their new shards, out of order; so the count changes only while there is nothing to do: the producers
stopped (or holding entries in their buffers), every shard drained, and no consumer alive. The old shard
streams are deleted, because their entries are all done and a shard beyond the new count would show in
status as stray. A feed's fingerprint stays in its old shard's hash, where its new shard does not look: one
Postgres look-up each, since fingerprints are a cache. The counters of dropped shards are added to the
shared counters hash, and a dropped shard's dead letters must be replayed or purged first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis
from redis.cluster import RedisCluster

from shared.backlog import group_backlog
from shared.counters import TIME_SUFFIX, add_counters
from shared.keys import Keys
from shared.redis_client import Client
from shared.shard_count import FIELD, existing_shards


class NotDrained(Exception):
    """The streams still hold work, or a consumer is alive: the shard count cannot change now."""


@dataclass(frozen=True)
class Resharded:
    before: int | None  # the recorded count; None when none was recorded
    after: int
    deleted_streams: int


def reshard(client: Client, keys: Keys, to: int, lease_ttl_ms: int) -> Resharded:
    """Record `to` as the shard count, after checking that nothing is left to do (raises NotDrained).

    On one server the streams are watched while they are checked: an entry published meanwhile aborts the
    change rather than be deleted with the old streams. A Redis Cluster cannot watch keys of many slots
    at once, and there the producers must be stopped, as the README says for every reshard.
    """
    if to < 1:
        raise ValueError("a shard count is at least 1")
    shards = existing_shards(client, keys)
    recorded = client.hget(keys.meta, FIELD)
    before = None if recorded is None else int(recorded)
    # Shards the new count drops: their counters go to the shared hash, so totals still add up.
    dropped = range(to, max([keys.shards, before or 0, *(n + 1 for n in shards)]))
    if isinstance(client, RedisCluster):
        _check_drained(client, keys, shards, dropped, lease_ttl_ms)
        for n in shards:
            client.delete(keys.shard(n))
        client.hset(keys.meta, FIELD, to)
    else:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(keys.meta, *(keys.shard(n) for n in shards))  # type: ignore[no-untyped-call]
            _check_drained(pipe, keys, shards, dropped, lease_ttl_ms)
            pipe.multi()
            for n in shards:
                pipe.delete(keys.shard(n))
            pipe.hset(keys.meta, FIELD, to)
            try:
                pipe.execute()
            except redis.WatchError as exc:
                raise NotDrained("entries were published while checking: stop the producers first") from exc
    _fold_counters(client, keys, dropped)
    return Resharded(before, to, len(shards))


def _fold_counters(client: Client, keys: Keys, dropped: range) -> None:
    for n in dropped:
        counters = add_counters({}, cast(dict[bytes, bytes], client.hgetall(keys.shard_stats(n))))
        for name, count in counters.items():
            if name.endswith(TIME_SUFFIX):
                client.hset(keys.stats, name, max(count, int(client.hget(keys.stats, name) or 0)))
            else:
                client.hincrby(keys.stats, name, count)
        client.delete(keys.shard_stats(n), keys.fingerprints(n))


def _check_drained(
    client: Client | redis.client.Pipeline, keys: Keys, shards: list[int], dropped: range, lease_ttl_ms: int
) -> None:
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
    for n in dropped:
        if client.xlen(keys.dead(n)):
            raise NotDrained(
                f"shard {n}, which the new count drops, keeps dead letters: replay or purge them first "
                "(consumer dlq)"
            )
