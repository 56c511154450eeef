"""The shard count recorded with the streams, so that a process set to another count refuses to start.

The shard function spreads feeds over `shards` streams, and every producer, consumer and operator command
must use the same count: a consumer set to 4 while producers use 8 never reads shards 4-7, and status would
call that healthy. So the count is recorded once, in `{stream}:meta` (field `shards`), by whichever process
first creates the streams, and every later process compares its own setting with it.
"""

from __future__ import annotations

import re

import redis

from shared.keys import Keys
from shared.redis_client import Client

FIELD = "shards"


class ShardCountMismatch(Exception):
    """This process is set to another shard count than the one recorded with the streams, or the record
    is unreadable. A person must fix the setting: no retry helps."""


def recorded(client: Client, keys: Keys) -> int | None:
    """The recorded shard count, or None when no process has recorded one yet."""
    return parse(keys, client.hget(keys.meta, FIELD))


def parse(keys: Keys, value: bytes | str | None) -> int | None:
    """The count in an HGET reply of the record (None: nothing recorded); raises if it is unreadable."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    if not text.isdigit() or int(text) < 1:
        raise ShardCountMismatch(f"{keys.meta} field {FIELD} holds {text!r}, not a shard count")
    return int(text)


def check(found: int | None, keys: Keys) -> None:
    """Raise ShardCountMismatch when a recorded count differs from this process's setting."""
    if found is not None and found != keys.shards:
        raise ShardCountMismatch(
            f"the streams {keys.stream}:* were created with {found} shards, but this process is set to "
            f"{keys.shards}: set ODDS_SHARDS={found} (or --shards {found}); to change the count, follow "
            "the README's 'Changing the shard count'"
        )


def existing_shards(client: Client, keys: Keys) -> list[int]:
    """The shard numbers whose stream exists in Redis, whatever the setting says (SCAN, never KEYS)."""
    pattern = re.compile(re.escape(keys.stream) + r":(\d+)")
    found = set()
    for key in client.scan_iter(match=keys.shard_pattern, count=1000, _type="stream"):
        match = pattern.fullmatch(key.decode() if isinstance(key, bytes) else key)
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def settle(client: Client, keys: Keys) -> None:
    """For a consumer at start: compare its count with the record, or record it.

    Raises ShardCountMismatch when the record differs, or when nothing is recorded yet but shard streams
    beyond this consumer's count exist (streams published before counts were recorded). HGET comes
    first: it needs no memory, so on a full Redis a consumer whose count is recorded still starts; one
    too full to record the count must not stop a consumer either, whose work is what frees memory, and
    the count is then recorded by a later start.
    """
    found = recorded(client, keys)
    if found is None:
        beyond = [n for n in existing_shards(client, keys) if n >= keys.shards]
        if beyond:
            raise ShardCountMismatch(
                f"shard streams {beyond} exist beyond the {keys.shards} shards this process is set to: set "
                "ODDS_SHARDS to the count the producers use"
            )
        try:
            client.hsetnx(keys.meta, FIELD, keys.shards)
        except redis.exceptions.OutOfMemoryError:
            return
        # Another process may have recorded its count in between: the one that won counts.
        found = recorded(client, keys)
    check(found, keys)
