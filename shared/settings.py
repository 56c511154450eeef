"""Every setting and its default, read from the environment once at start."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from shared.keys import Keys

ENV_PREFIX = "ODDS_"


class SettingsError(ValueError):
    """A setting from the environment or the command line is unusable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "postgresql://postgres@localhost:5432/odds"
    # The stream name is a prefix: shard n lives at "{stream}:{n}". The shard count is part of the wire
    # contract (publishers compute the shard), so change it only with the pipeline drained.
    stream: str = "odds:snapshots"
    shards: int = 4
    group: str = "odds-writers"
    consumer: str = ""
    # Entries per read, over all owned shards. Each commit waits for a WAL flush, which larger batches share;
    # two batches are in memory at once (one committing, one read ahead). On 2 cores 1,000 beat 500 and 2,000.
    batch_size: int = 1000
    # A read stops short of this many bytes of entries (a shard's share of it), so one Redis call stays short
    # and a batch of large snapshots stays in memory bounds: 16 MiB is some 4,000 entries of the usual 4 kB,
    # or 40 snapshots of 5,000 markets.
    batch_max_bytes: int = 16 * 1024 * 1024
    # Rows (market rows, plus one per snapshot) one transaction writes at most; a larger batch commits in
    # parts. 50,000 rows took well under a second here, far inside the database deadline.
    batch_max_rows: int = 50_000
    # A shard lease lasts this long without renewal; pending entries of a consumer that lost its lease are
    # claimed once idle this long. It must exceed the worst batch, which db_deadline_s bounds.
    claim_idle_ms: int = 30_000
    db_deadline_s: float = 10.0
    max_deliveries: int = 10
    # Hard cap per shard: reached only when consumers fall that far behind; entries trimmed beyond the
    # safe point are counted and logged as lost.
    stream_hard_cap: int = 1_000_000
    trim_interval_s: float = 5.0
    # Other consumers idle this long on a shard, with nothing pending there, are removed from its group.
    consumer_expiry_ms: int = 3_600_000
    max_entry_bytes: int = 1_048_576
    # Feed ids remembered by a consumer: beyond this the least recently used are looked up again.
    feed_id_cache: int = 100_000
    redis_timeout_s: float = 2.0
    producer_buffer: int = 100_000
    # Producers hold entries back once Redis uses this share of its maxmemory, so that consumers keep the
    # room they need to drain a backlog; 1 turns the mark off. No effect while maxmemory is 0.
    producer_high_water: float = 0.8
    # A feed's fingerprint leaves Redis once the feed has not been seen for this long; its next sighting
    # costs one Postgres look-up, never a wrong row.
    fingerprint_expiry_s: int = 86_400
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise SettingsError("shards must be at least 1")
        for name in (
            "batch_size",
            "batch_max_bytes",
            "batch_max_rows",
            "feed_id_cache",
            "fingerprint_expiry_s",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if not 0 < self.producer_high_water <= 1:
            raise SettingsError("producer_high_water is a share of maxmemory: above 0, at most 1")
        if self.db_deadline_s * 1000 >= self.claim_idle_ms:
            raise SettingsError(
                "claim_idle_ms must exceed db_deadline_s, or reclaim would take work from a live consumer"
            )

    @property
    def keys(self) -> Keys:
        return Keys(self.stream, self.group, self.shards)

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read REDIS_URL, DATABASE_URL and ODDS_<FIELD> variables; keyword overrides (CLI flags) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.name.upper()
            raw = env.get(name) if name in ("REDIS_URL", "DATABASE_URL") else env.get(ENV_PREFIX + name)
            if raw is not None:
                values[field.name] = _parse(field.name, raw, type(getattr(cls, field.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} as {kind.__name__}") from exc
