"""`python -m consumer status`: the state of the streams, the groups and the counters, for people and scripts.

Everything here is read-only, so it is safe to run against a live pipeline as often as a health check likes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import psycopg

from consumer.memory_watch import GROWTH_FIELD, SAMPLED_FIELD
from shared.backlog import PAGE, RawEntry, count_below, undelivered
from shared.counters import read_totals
from shared.db import psycopg_url
from shared.keys import Keys
from shared.logs import redact
from shared.memory import Growth, RedisMemory, eviction_risk, read_memory
from shared.paging import pages
from shared.redis_client import Client
from shared.shard_count import existing_shards
from shared.stream_ids import format_id, next_id, stream_id
from shared.trim import safe_trim_point

GROWTH_FRESH_MS = 60_000  # a growth estimate older than this says nothing about now
# Thresholds read as whole numbers from ODDS_STATUS_<NAME> and --<name> flags.
THRESHOLD_NAMES = (
    "max_backlog",
    "max_pending_age_ms",
    "max_dead_letters",
    "idle_ms",
    "max_commit_age_ms",
    "max_entry_deliveries",
    "max_id_use_pct",
)


@dataclass(frozen=True)
class Thresholds:
    """Limits past which status reports the pipeline unhealthy (and exits non-zero)."""

    max_backlog: int = 100_000
    # Time since delivery without an acknowledgement. A live consumer acks within its database deadline and
    # a dead one's entries are reclaimed after ODDS_LEASE_TTL_MS, so waiting much longer means stuck.
    max_pending_age_ms: int = 120_000
    # Every dead letter needs a person: replay it once fixed, or purge it.
    max_dead_letters: int = 0
    # Consumers silent this long are listed as idle; informational, since stopped ones stay in the group.
    idle_ms: int = 300_000
    # Work waiting this long with no commit at all means the consumers are stuck (or none is running).
    max_commit_age_ms: int = 120_000
    # The producers' high-water mark (the producer_high_water setting): past it they hold entries back.
    high_water: float = 0.8
    # An entry delivered more often than this keeps failing: most often a consumer that crashes on it and
    # restarts. A crash and a reclaim take a delivery count to 3 or 4; dead-lettering waits for
    # ODDS_MAX_DELIVERIES, and with it everything else the crashing batch held.
    max_entry_deliveries: int = 5
    # Share of an id sequence's range in use past which status warns, long before inserts fail.
    max_id_use_pct: int = 50

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: float | int | None
    ) -> Thresholds:
        env = os.environ if environ is None else environ
        values: dict[str, float | int] = {}
        for name in THRESHOLD_NAMES:
            raw = env.get(f"ODDS_STATUS_{name.upper()}")
            if raw is not None:
                values[name] = int(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class GroupStatus:
    name: str
    last_delivered_id: str
    undelivered: int  # entries after the group's last-delivered id: not yet read by any consumer
    pending: int  # delivered but not acknowledged
    oldest_ms: int | None = None  # when the oldest entry still to do was added (its id's time)

    @property
    def backlog(self) -> int:
        return self.undelivered + self.pending


@dataclass
class ShardStatus:
    stream: str
    length: int
    owner: str | None  # consumer holding the shard's lease
    groups: list[GroupStatus] = field(default_factory=list)
    trim_point: str | None = None  # lowest id any group still needs; None: no group, keep everything
    trimmable: int = 0  # entries below the trim point, which the next trim deletes without loss


@dataclass
class ConsumerStatus:
    group: str
    name: str
    pending: int = 0
    oldest_pending_age_ms: int = 0  # the longest any of its pending entries has waited since delivery
    max_deliveries: int = 0
    idle_ms: int | None = None  # since its last read or claim, on the shard it touched most recently
    starts: int = 0  # times a consumer of this name started: a number that keeps rising is a crash loop


@dataclass
class Status:
    shards: list[ShardStatus] = field(default_factory=list)
    consumers: list[ConsumerStatus] = field(default_factory=list)
    dead_letters: int = 0
    fingerprints: int = 0
    feeds: int | None = None  # feeds with a stored snapshot in Postgres; None when it could not be asked
    id_use_pct: dict[str, float] = field(default_factory=dict)  # id sequence -> share of its range used
    database_error: str | None = None
    last_commit_ms: int | None = None
    now_ms: int = 0  # Redis's clock, so ages do not depend on this host's
    counters: dict[str, int] = field(default_factory=dict)
    memory: RedisMemory | None = None
    stream_bytes: int = 0  # memory of all shard streams
    # Memory growth as consumers last sampled it; None when no consumer sampled in the last minute.
    memory_growth_bytes_per_s: float | None = None
    # Shard streams beyond the configured count, with their lengths: written by a producer set to more
    # shards, and read by no consumer set like this status.
    stray_shards: dict[int, int] = field(default_factory=dict)

    @property
    def backlog(self) -> int:
        return sum(g.backlog for s in self.shards for g in s.groups)

    @property
    def fingerprint_coverage(self) -> float | None:
        return None if not self.feeds else min(1.0, self.fingerprints / self.feeds)

    @property
    def last_commit_age_ms(self) -> int | None:
        return None if self.last_commit_ms is None else max(0, self.now_ms - self.last_commit_ms)

    @property
    def oldest_work_age_ms(self) -> int | None:
        """How long the oldest entry still to do has waited; None when there is nothing to do."""
        oldest = [g.oldest_ms for s in self.shards for g in s.groups if g.backlog and g.oldest_ms is not None]
        return max(0, self.now_ms - min(oldest)) if oldest else None

    @property
    def memory_full_in_s(self) -> float | None:
        """Seconds until maxmemory at the sampled growth; None unknown, infinite when not growing."""
        if self.memory is None or self.memory_growth_bytes_per_s is None:
            return None
        growth = Growth()
        growth.bytes_per_s = self.memory_growth_bytes_per_s
        return growth.seconds_until(self.memory)

    def problems(self, limits: Thresholds) -> list[str]:
        """The thresholds this status crosses, in words; empty when healthy."""
        found = []
        if self.backlog > limits.max_backlog:
            found.append(f"backlog {self.backlog} is over {limits.max_backlog}")
        for c in self.consumers:
            if c.pending and c.oldest_pending_age_ms > limits.max_pending_age_ms:
                found.append(
                    f"consumer {c.name} has an entry pending for {c.oldest_pending_age_ms} ms, "
                    f"over {limits.max_pending_age_ms}"
                )
            if c.max_deliveries > limits.max_entry_deliveries:
                found.append(
                    f"consumer {c.name} holds an entry delivered {c.max_deliveries} times, over "
                    f"{limits.max_entry_deliveries}: something fails on it every time (started "
                    f"{c.starts} times; look for consumer_crashed in its log)"
                )
        if self.dead_letters > limits.max_dead_letters:
            found.append(f"{self.dead_letters} dead letters, over {limits.max_dead_letters}")
        waited, since = self.oldest_work_age_ms, self.last_commit_age_ms
        if (
            waited is not None
            and waited > limits.max_commit_age_ms
            and (since is None or since > limits.max_commit_age_ms)
        ):
            found.append(
                f"backlog {self.backlog} waits for {duration(waited)} with "
                + ("no commit ever" if since is None else f"no commit for {duration(since)}")
            )
        memory = self.memory
        if memory is not None:
            if memory.over(limits.high_water):
                found.append(
                    f"Redis uses {memory.share:.0%} of maxmemory, over the producers' high-water mark of "
                    f"{limits.high_water:.0%}: producers hold entries back"
                )
            if (risk := eviction_risk(memory)) is not None:
                found.append(risk)
        if self.stray_shards:
            found.append(
                f"{sum(self.stray_shards.values())} entries on shards {sorted(self.stray_shards)} beyond the "
                f"{len(self.shards)} shards configured: no consumer set like this reads them (check "
                "ODDS_SHARDS everywhere)"
            )
        for sequence, pct in sorted(self.id_use_pct.items()):
            if pct > limits.max_id_use_pct:
                found.append(
                    f"sequence {sequence} has used {pct:.0f}% of its range, over {limits.max_id_use_pct}%"
                )
        return found

    def as_dict(self, limits: Thresholds | None = None) -> dict[str, Any]:
        limits = limits or Thresholds()
        shards = [
            {**asdict(s), "groups": [{**asdict(g), "backlog": g.backlog} for g in s.groups]}
            for s in self.shards
        ]
        consumers = [
            {**asdict(c), "idle": c.idle_ms is not None and c.idle_ms >= limits.idle_ms}
            for c in self.consumers
        ]
        problems = self.problems(limits)
        return {
            **asdict(self),
            "shards": shards,
            "consumers": consumers,
            "backlog": self.backlog,
            "fingerprint_coverage": self.fingerprint_coverage,
            "last_commit_age_ms": self.last_commit_age_ms,
            "oldest_work_age_ms": self.oldest_work_age_ms,
            "memory_full_in_s": _finite(self.memory_full_in_s),
            "memory_share": self.memory.share if self.memory else None,
            "keys_at_risk": list(self.memory.keys_at_risk) if self.memory else [],
            "thresholds": asdict(limits),
            "problems": problems,
            "healthy": not problems,
        }


def collect(client: Client, keys: Keys, database_url: str | None = None) -> Status:
    """Read the pipeline's state from Redis, and the feed count from Postgres when a URL is given."""
    seconds, micros = client.time()
    status = Status(now_ms=int(seconds) * 1000 + int(micros) // 1000)
    consumers: dict[tuple[str, str], ConsumerStatus] = {}
    for n, stream in enumerate(keys.all_shards()):
        owner = client.get(keys.lease(n))
        shard = ShardStatus(stream, int(client.xlen(stream)), _text(owner) if owner else None)
        if client.exists(stream):
            for group in client.xinfo_groups(stream):
                shard.groups.append(_group(client, stream, group, shard.length, consumers))
            if keys.group not in {g.name for g in shard.groups}:
                # Published before any consumer created the group: consumers will create it from id 0,
                # so the whole stream is work still to do, not nothing.
                first = cast(list[RawEntry], client.xrange(stream, count=1))
                oldest = stream_id(first[0][0])[0] if first else None
                shard.groups.append(GroupStatus(keys.group, "0-0", shard.length, 0, oldest))
            shard_memory = client.memory_usage(stream)
            status.stream_bytes += int(shard_memory or 0)
            point = safe_trim_point(client, stream)
            if point is not None:
                shard.trim_point = format_id(point)
                shard.trimmable = count_below(client, stream, point, shard.length)
        status.shards.append(shard)
    for raw_name, raw_starts in client.hgetall(keys.starts).items():
        name = _text(raw_name)
        consumers.setdefault((keys.group, name), ConsumerStatus(keys.group, name)).starts = int(raw_starts)
    status.consumers = sorted(consumers.values(), key=lambda c: (c.group, c.name))
    for n in existing_shards(client, keys):
        if n >= keys.shards:
            status.stray_shards[n] = int(client.xlen(keys.shard(n)))
    pipe = client.pipeline(transaction=False)
    for n in range(keys.shards):
        pipe.xlen(keys.dead(n))
        pipe.hlen(keys.fingerprints(n))
    sizes = [int(size) for size in pipe.execute()]
    status.dead_letters, status.fingerprints = sum(sizes[0::2]), sum(sizes[1::2])
    status.counters = read_totals(client, keys)
    status.last_commit_ms = status.counters.pop("last_commit_ms", None)
    status.memory = read_memory(client)
    growth = status.counters.pop(GROWTH_FIELD, None)
    sampled = status.counters.pop(SAMPLED_FIELD, None)
    if growth is not None and sampled is not None and status.now_ms - sampled <= GROWTH_FRESH_MS:
        status.memory_growth_bytes_per_s = float(growth)
    if database_url:
        try:
            status.feeds, status.id_use_pct = database_facts(database_url)
        except psycopg.Error as exc:
            status.database_error = redact(f"{type(exc).__name__}: {exc}".strip())
    return status


def _group(
    client: Client,
    stream: str,
    info: dict[str, Any],
    length: int,
    consumers: dict[tuple[str, str], ConsumerStatus],
) -> GroupStatus:
    name = _text(info["name"])
    last = stream_id(info["last-delivered-id"])
    behind = undelivered(client, stream, info, length)
    for row in client.xinfo_consumers(stream, name):
        who = _text(row["name"])
        c = consumers.setdefault((name, who), ConsumerStatus(name, who))
        idle = int(row["idle"])
        c.idle_ms = idle if c.idle_ms is None else min(c.idle_ms, idle)
    oldest = None
    rows = pages(
        lambda start, size: client.xpending_range(stream, name, min=start, max="+", count=size),
        lambda row: _text(row["message_id"]),
        PAGE,
    )
    for row in rows:
        if oldest is None:
            oldest = stream_id(_text(row["message_id"]))[0]
        who = _text(row["consumer"])
        c = consumers.setdefault((name, who), ConsumerStatus(name, who))
        c.pending += 1
        c.oldest_pending_age_ms = max(c.oldest_pending_age_ms, int(row["time_since_delivered"]))
        c.max_deliveries = max(c.max_deliveries, int(row["times_delivered"]))
    if oldest is None and behind:
        nxt = cast(list[RawEntry], client.xrange(stream, min=format_id(next_id(last)), count=1))
        oldest = stream_id(nxt[0][0])[0] if nxt else None
    return GroupStatus(name, format_id(last), behind, int(info["pending"]), oldest)


def database_facts(database_url: str) -> tuple[int, dict[str, float]]:
    """Feeds with a stored snapshot, and the share of each id sequence's range that is used up."""
    with psycopg.connect(psycopg_url(database_url), connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM feeds WHERE current_snapshot_id IS NOT NULL").fetchone()
        sequences = conn.execute(
            "SELECT sequencename, 100.0 * coalesce(last_value, 0) / max_value FROM pg_sequences"
            " WHERE schemaname = current_schema()"
        ).fetchall()
    return int(row[0]) if row else 0, {str(name): float(pct) for name, pct in sequences}


def _finite(seconds: float | None) -> float | None:
    """JSON has no infinity: null when unknown or not growing (memory_growth_bytes_per_s tells which)."""
    return None if seconds is None or math.isinf(seconds) else seconds


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
