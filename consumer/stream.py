"""Stream I/O of a consumer: read its shards, reclaim a dead consumer's entries, acknowledge, dead-letter."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from redis.cluster import RedisCluster
from redis.typing import EncodableT, FieldT

from consumer.plan import Entry, Poison
from consumer.scripts import load
from shared.keys import Keys
from shared.redis_client import Client

log = structlog.get_logger(__name__)

NEW = ">"
OWN_HISTORY = "0"  # re-read our own pending entries: after a crash, or after claiming a dead consumer's


@dataclass
class ReadResult:
    entries: list[Entry] = field(default_factory=list)
    lost_leases: set[int] = field(default_factory=set)
    drained_history: set[int] = field(default_factory=set)  # shards whose own history read came back empty


@dataclass
class Outcome:
    """What a processed batch leaves behind in Redis after the Postgres commit: per shard stream, in one
    step each (consumer/lua/finish.lua)."""

    acks: dict[str, list[bytes]] = field(default_factory=dict)
    dead: list[Poison] = field(default_factory=list)
    # shard stream -> feed -> (fingerprint, capture ms): kept with the shard the feed's entries came from
    fingerprints: dict[str, dict[str, tuple[bytes, int]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def ack(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.acks.setdefault(entry.stream, []).append(entry.entry_id)

    def count(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def fingerprint(self, stream: str, feed: str, value: tuple[bytes, int]) -> None:
        self.fingerprints.setdefault(stream, {})[feed] = value


class ShardStreams:
    def __init__(self, client: Client, keys: Keys, consumer: str) -> None:
        self._client = client
        self._keys = keys
        self.consumer = consumer
        self._read = load(client, "read")
        self._remove_if_empty = load(client, "remove_if_empty")
        self._create_group = load(client, "create_group")
        self._finish = load(client, "finish")
        self._stats = load(client, "stats")
        self._turn = 0

    def ensure_groups(self) -> None:
        """Create the group on every shard from id 0 (never $, which would skip what is already there)."""
        for stream in self._keys.all_shards():
            self._create_group(keys=[stream], args=[self._keys.group])

    def read(self, shards: Mapping[int, str], count: int, max_bytes: int, max_entry_bytes: int) -> ReadResult:
        """Read up to count entries from each shard at the given id (NEW or OWN_HISTORY).

        The whole read also stops short of max_bytes. max_entry_bytes, the size one entry may have,
        sizes its pages, so that a read never goes far past max_bytes.
        """
        result = ReadResult()
        if not shards:
            return result
        # Each read starts at the next shard: the byte budget is shared, and the first shards read take it.
        ordered = sorted(shards)
        self._turn = (self._turn + 1) % len(ordered)
        order = ordered[self._turn :] + ordered[: self._turn]
        budget, taken = max_bytes, 0
        try:
            for call in self._calls(order):
                if taken and budget < max_entry_bytes:
                    break  # the shards left are neither drained nor lost: the next read starts with them
                keys: list[str] = []
                for n in call:
                    keys += [self._keys.lease(n), self._keys.shard(n)]
                args: list[EncodableT] = [
                    self.consumer,
                    self._keys.group,
                    count,
                    budget,
                    max_entry_bytes,
                    taken,
                ]
                reply = self._read(keys=keys, args=[*args, *(shards[n] for n in call)])
                for n, (stream, held, raw_entries, unread) in zip(call, reply):
                    if not held:
                        result.lost_leases.add(n)
                        continue
                    entries = [_entry(stream.decode(), raw) for raw in raw_entries]
                    budget -= sum(_size(raw) for raw in raw_entries)
                    taken += len(entries)
                    if shards[n] == OWN_HISTORY:
                        if not entries and not unread:
                            result.drained_history.add(n)
                        entries = self._with_deliveries(entries)
                    result.entries += entries
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream or the group (restart without persistence): recreate and read again.
            log.warning("consumer_group_missing_recreating", error=str(exc))
            self.ensure_groups()
        return result

    def _calls(self, order: list[int]) -> list[list[int]]:
        """The shards, in order, cut into the groups one script call may read together: all of them on one
        server; on a Redis Cluster those whose keys share a slot (a script may touch one slot only)."""
        if not isinstance(self._client, RedisCluster):
            return [order]
        calls: list[list[int]] = []
        slots: list[int] = []
        for n in order:
            slot = self._client.keyslot(self._keys.shard(n))  # type: ignore[no-untyped-call]
            if calls and slots[-1] == slot:
                calls[-1].append(n)
            else:
                calls.append([n])
                slots.append(slot)
        return calls

    def claim_pending(self, n: int) -> tuple[int, list[bytes]]:
        """Move every entry of shard n that others hold pending into ours, sweeping the cursor to 0-0.

        However recently delivered: the caller holds the shard's lease (see Daemon._take_over).

        XAUTOCLAIM looks at no more than COUNT*10 entries per call, so one call can leave a tail behind.
        (Not JUSTID: redis-py drops the cursor from that reply.)
        Returns how many were claimed, and the ids that were pending but deleted by trimming (lost).
        """
        stream, cursor = self._keys.shard(n), "0-0"
        claimed, deleted = 0, []
        while True:
            reply = self._client.xautoclaim(
                stream, self._keys.group, self.consumer, 0, start_id=cursor, count=100
            )
            cursor, claimed = reply[0], claimed + len(reply[1])
            if len(reply) > 2:
                deleted += reply[2]
            if cursor in (b"0-0", "0-0"):
                return claimed, deleted

    def remove_idle_consumers(self, n: int, min_idle_ms: int) -> list[str]:
        """Remove from shard n's group the other consumers idle that long that hold nothing pending there.

        Consumer names default to host-pid, so every restart adds one to the group, and stopped ones would
        be listed for ever. A live consumer removed here loses nothing: its next read on the shard adds it
        back.
        """
        stream, removed = self._keys.shard(n), []
        for row in self._client.xinfo_consumers(stream, self._keys.group):
            name = row["name"].decode()
            if name == self.consumer or int(row["pending"]) or int(row["idle"]) < min_idle_ms:
                continue
            if self._remove_if_empty(keys=[stream], args=[self._keys.group, name]):
                removed.append(name)
        if removed:
            # Their start counts go with them, or every restart under a new name would stay for ever.
            self._client.hdel(self._keys.starts, *removed)
        return removed

    def oldest_deliveries(self, n: int) -> int:
        """How often our oldest pending entry of shard n has been delivered (0 when none is pending)."""
        rows = self._client.xpending_range(
            self._keys.shard(n), self._keys.group, min="-", max="+", count=1, consumername=self.consumer
        )
        return int(rows[0]["times_delivered"]) if rows else 0

    def others_pending(self, n: int) -> int:
        summary = self._client.xpending(self._keys.shard(n), self._keys.group)
        me = self.consumer.encode()
        return sum(int(c["pending"]) for c in summary.get("consumers") or [] if c["name"] != me)

    def fingerprints(self, feeds: Mapping[str, Iterable[str]]) -> dict[str, tuple[bytes, int]]:
        """The stored fingerprints of feeds, given per shard stream: one round trip per server."""
        asked = [(stream, list(names)) for stream, names in feeds.items() if names]
        if not asked:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for stream, names in asked:
            pipe.hmget(self._keys.fingerprints(self._keys.shard_number(stream)), names)
        found: dict[str, tuple[bytes, int]] = {}
        for (_, names), values in zip(asked, pipe.execute(), strict=True):
            found.update((f, decode_fingerprint(v)) for f, v in zip(names, values) if isinstance(v, bytes))
        return found

    def finish(self, outcome: Outcome) -> None:
        """Record fingerprints, dead letters, counters and acknowledgements, one atomic step per shard.

        This runs only after the Postgres commit (consumer/lua/finish.lua says why). The batch's counters
        go with its first shard's step; a step that acknowledges nothing (its reply was lost, and this is
        the bookkeeping sent again) adds none, so nothing is counted twice. A crash between two shards'
        steps leaves the later shards' entries pending: redelivered, and recognised as applied.

        On one server the steps go in one pipeline, one round trip instead of one per shard: a batch
        touches every shard it owns, and each round trip also made the commit thread wait for the GIL. A
        cluster client refuses scripts in a pipeline, so there each step is a call of its own.
        """
        letters: dict[str, list[tuple[Poison, dict[FieldT, EncodableT]]]] = {}
        for poison in outcome.dead:
            letters.setdefault(poison.entry.stream, []).append((poison, self._dead_letter(poison)))
        counts = outcome.counts
        steps: list[tuple[list[str], list[EncodableT]]] = []
        for stream in sorted(outcome.acks):
            n = self._keys.shard_number(stream)
            ids, prints, dead = (
                outcome.acks[stream],
                outcome.fingerprints.get(stream, {}),
                letters.get(stream, []),
            )
            args: list[EncodableT] = [self._keys.group, len(prints), len(dead), len(counts), len(ids)]
            for feed, (fp, ts) in prints.items():
                args += [feed, encode_fingerprint(fp, ts)]
            for poison, letter in dead:
                args += [poison.entry.entry_id, len(letter)]
                for name, value in letter.items():
                    args += [name, value]
            for name, count in counts.items():
                args += [name, count]
            args += ids
            keys = [self._keys.fingerprints(n), self._keys.dead(n), self._keys.shard_stats(n), stream]
            steps.append((keys, args))
            counts = {}
        if isinstance(self._client, RedisCluster):
            for keys, args in steps:
                self._finish(keys=keys, args=args)
        elif steps:
            self._run_steps(steps)

    def _run_steps(self, steps: list[tuple[list[str], list[EncodableT]]]) -> None:
        """finish.lua once per (keys, args), pipelined; loaded again when the server has lost it (a
        restart: the script cache is not persisted). Sending every step again is harmless: a step that
        acknowledges nothing records nothing twice."""
        script = self._finish
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for keys, args in steps:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                pipe.execute()
                return
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                script.sha = self._client.script_load(script.script)

    def record_stats(self, increments: Mapping[str, int], values: Mapping[str, int] | None = None) -> None:
        """Add to counters and set fields of the counters hash, also on a full Redis."""
        args: list[EncodableT] = [len(increments)]
        for name, n in increments.items():
            args += [name, n]
        for name, value in (values or {}).items():
            args += [name, value]
        self._stats(keys=[self._keys.stats], args=args)

    def _dead_letter(self, poison: Poison) -> dict[FieldT, EncodableT]:
        letter: dict[FieldT, EncodableT] = dict((poison.entry.fields or {}).items())
        letter.update(
            {
                "dead_reason": poison.reason,
                "dead_source_stream": poison.entry.stream,
                "dead_source_id": poison.entry.entry_id,
                "dead_deliveries": poison.entry.deliveries,
                "dead_consumer": self.consumer,
                "dead_at_ms": int(time.time() * 1000),
            }
        )
        return letter

    def _with_deliveries(self, entries: list[Entry]) -> list[Entry]:
        if not entries:
            return entries
        rows = self._client.xpending_range(
            entries[0].stream,
            self._keys.group,
            min=entries[0].entry_id,
            max=entries[-1].entry_id,
            count=len(entries),
            consumername=self.consumer,
        )
        counts = {row["message_id"]: int(row["times_delivered"]) for row in rows}
        return [Entry(e.stream, e.entry_id, e.fields, counts.get(e.entry_id, e.deliveries)) for e in entries]


def _size(raw: list[Any]) -> int:
    """An entry's field names and values in bytes, as read.lua counts them against the budget."""
    return sum(len(part) for part in raw[1]) if len(raw) > 1 and raw[1] else 0


def _entry(stream: str, raw: list[Any]) -> Entry:
    entry_id, flat = raw[0], raw[1] if len(raw) > 1 else None
    fields = None if not flat else dict(zip(flat[0::2], flat[1::2]))
    return Entry(stream, entry_id, fields, 1)


def encode_fingerprint(fp: bytes, ts_ms: int) -> bytes:
    return fp + ts_ms.to_bytes(8, "big")


def decode_fingerprint(value: bytes) -> tuple[bytes, int]:
    return value[:-8], int.from_bytes(value[-8:], "big")
