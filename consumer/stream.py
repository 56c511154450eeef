"""Stream I/O of a consumer: read its shards, reclaim a dead consumer's entries, acknowledge, dead-letter."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from redis.typing import EncodableT, FieldT

from consumer.plan import Entry, Poison
from consumer.scripts import load
from shared.keys import Keys

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
    """What a processed batch leaves behind in Redis, written in one MULTI after the Postgres commit."""

    acks: dict[str, list[bytes]] = field(default_factory=dict)
    dead: list[Poison] = field(default_factory=list)
    fingerprints: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def ack(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.acks.setdefault(entry.stream, []).append(entry.entry_id)

    def count(self, name: str, n: int) -> None:
        if n:
            self.counts[name] = self.counts.get(name, 0) + n


class ShardStreams:
    def __init__(self, client: redis.Redis, keys: Keys, consumer: str) -> None:
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
        keys: list[str] = []
        for n in order:
            keys += [self._keys.lease(n), self._keys.shard(n)]
        try:
            reply = self._read(
                keys=keys,
                args=[
                    self.consumer,
                    self._keys.group,
                    count,
                    max_bytes,
                    max_entry_bytes,
                    *(shards[n] for n in order),
                ],
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the stream or the group (restart without persistence): recreate and read again.
            log.warning("consumer_group_missing_recreating", error=str(exc))
            self.ensure_groups()
            return result
        for n, (stream, held, raw_entries, unread) in zip(order, reply):
            if not held:
                result.lost_leases.add(n)
                continue
            entries = [_entry(stream.decode(), raw) for raw in raw_entries]
            if shards[n] == OWN_HISTORY:
                if not entries and not unread:
                    result.drained_history.add(n)
                entries = self._with_deliveries(entries)
            result.entries += entries
        return result

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

    def fingerprints(self, feeds: list[str]) -> dict[str, tuple[bytes, int]]:
        if not feeds:
            return {}
        values = self._client.hmget(self._keys.fingerprints, feeds)
        return {f: decode_fingerprint(v) for f, v in zip(feeds, values) if isinstance(v, bytes)}

    def finish(self, outcome: Outcome) -> None:
        """Record fingerprints, dead letters, counters and acknowledgements in one atomic step.

        This runs only after the Postgres commit, as one script (consumer/lua/finish.lua says why).
        """
        streams = list(outcome.acks)
        letters = [self._dead_letter(poison) for poison in outcome.dead]
        args: list[EncodableT] = [self._keys.group, len(outcome.fingerprints), len(letters)]
        args += [len(outcome.counts), *(len(outcome.acks[s]) for s in streams)]
        for feed, (fp, ts) in outcome.fingerprints.items():
            args += [feed, encode_fingerprint(fp, ts)]
        key_index = {stream: 4 + i for i, stream in enumerate(streams)}  # KEYS[4..] in Lua's counting
        for poison, letter in zip(outcome.dead, letters, strict=True):
            args += [key_index[poison.entry.stream], poison.entry.entry_id, len(letter)]
            for name, value in letter.items():
                args += [name, value]
        for name, n in outcome.counts.items():
            args += [name, n]
        for stream in streams:
            args += outcome.acks[stream]
        self._finish(keys=[self._keys.fingerprints, self._keys.dead, self._keys.stats, *streams], args=args)

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


def _entry(stream: str, raw: list[Any]) -> Entry:
    entry_id, flat = raw[0], raw[1] if len(raw) > 1 else None
    fields = None if not flat else dict(zip(flat[0::2], flat[1::2]))
    return Entry(stream, entry_id, fields, 1)


def encode_fingerprint(fp: bytes, ts_ms: int) -> bytes:
    return fp + ts_ms.to_bytes(8, "big")


def decode_fingerprint(value: bytes) -> tuple[bytes, int]:
    return value[:-8], int.from_bytes(value[-8:], "big")
