"""Every setting and its default, read from the environment once at start."""

from __future__ import annotations

import os
import pathlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from shared.keys import Keys
from shared.logs import redact

ENV_PREFIX = "ODDS_"
# Settings without the ODDS_ prefix, each of which may also come from a file (NAME_FILE), as Docker and
# Kubernetes secrets are mounted: the URLs carry the passwords.
UNPREFIXED = ("REDIS_URL", "DATABASE_URL")
FILE_SUFFIX = "_FILE"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class SettingsError(ValueError):
    """A setting from the environment or the command line is unusable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    database_url: str = "postgresql://postgres@localhost:5432/odds"
    # The stream name is a prefix: shard n lives at "{stream}:{n}". The shard count is part of the wire
    # contract (publishers compute the shard) and is recorded with the streams (shared/shard_count.py):
    # change it with `consumer reshard`, drained. 16 lets a deployment grow to 16 consumer processes.
    stream: str = "odds:snapshots"
    shards: int = 16
    group: str = "odds-writers"
    consumer: str = ""
    # Entries per read, over all owned shards. Each commit waits for a WAL flush, which larger batches share;
    # two batches are in memory at once (one committing, one read ahead). On 2 cores 1,000 beat 500 and 2,000.
    batch_size: int = 1000
    # A read stops short of this many bytes of entries, over all the shards it reads, so one Redis call
    # stays short and a batch of large snapshots stays in memory bounds: 16 MiB is some 4,000 entries of the
    # usual 4 kB, or 40 snapshots of 5,000 markets.
    batch_max_bytes: int = 16 * 1024 * 1024
    # Rows (market rows, plus one per snapshot) one transaction writes at most; a larger batch commits in
    # parts. 50,000 rows took well under a second here, far inside the database deadline.
    batch_max_rows: int = 50_000
    # A shard lease lasts this long without renewal, so a consumer that died gives its shards up after it.
    # A thread renews the leases every quarter of it, also while a commit runs, so it need not exceed the
    # worst batch: the next owner claims what the dead one left pending at once.
    lease_ttl_ms: int = 3000
    db_deadline_s: float = 10.0
    max_deliveries: int = 10
    # Hard cap per shard: reached only when consumers fall that far behind; entries trimmed beyond the
    # safe point are counted and logged as lost.
    stream_hard_cap: int = 1_000_000
    # Whether producers enforce the hard cap too, for when no consumer runs for good. Off: trimming deletes
    # entries, which a producer's Redis user should not be allowed to do (see the README's ACL), and
    # consumers enforce the cap on the shards they own. The high-water mark bounds Redis memory meanwhile.
    producer_hard_cap: bool = False
    trim_interval_s: float = 5.0
    # Other consumers idle this long on a shard, with nothing pending there, are removed from its group.
    consumer_expiry_ms: int = 3_600_000
    max_entry_bytes: int = 1_048_576
    # A snapshot with more markets, or a market with more outcomes, is dead-lettered before it is decoded:
    # its size alone would cost memory and time for the rest of the batch.
    max_markets: int = 10_000
    max_outcomes: int = 1_000
    # Feed ids remembered by a consumer: beyond this the least recently used are looked up again.
    feed_id_cache: int = 100_000
    # Markets a consumer keeps in memory, twice: each feed's current markets (to compare a change with) and
    # the rows of markets it decoded (to skip decoding them again). Beyond it the least recently used go,
    # and cost a Postgres read or a decode when next needed. 400,000 (10,000 feeds of 40 markets) took peak
    # RSS from 132 MB to 412 MB through a 1,000,000-entry backlog.
    market_cache: int = 400_000
    redis_timeout_s: float = 2.0
    producer_buffer: int = 100_000
    # Producers hold entries back once Redis uses this share of its maxmemory, so that consumers keep the
    # room they need to drain a backlog; 1 turns the mark off. No effect while maxmemory is 0.
    producer_high_water: float = 0.8
    # Replication is asynchronous: a master that dies can take acknowledged XADDs with it. With N > 0 an
    # entry counts as published only once N replicas have it (WAIT on the connection that wrote, waiting
    # at most producer_wait_timeout_ms); until then it stays in the buffer and is sent again.
    producer_wait_replicas: int = 0
    producer_wait_timeout_ms: int = 500
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
            "market_cache",
            "fingerprint_expiry_s",
            "max_markets",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.max_outcomes < 3:
            # It bounds every map of the data, and a market's own map has three keys.
            raise SettingsError("max_outcomes must be at least 3")
        if not 0 < self.producer_high_water <= 1:
            raise SettingsError("producer_high_water is a share of maxmemory: above 0, at most 1")
        if self.producer_wait_replicas < 0 or self.producer_wait_timeout_ms < 1:
            raise SettingsError(
                "producer_wait_replicas must be 0 or more, producer_wait_timeout_ms at least 1"
            )
        if "{" in self.stream or "}" in self.stream:
            # A brace would make part of the name a hash tag, and a shard's keys could land in other slots.
            raise SettingsError("stream must not contain { or }")
        if self.lease_ttl_ms < 1000:
            # Renewal runs every quarter of the TTL: a shorter one would lapse on a slow network round trip.
            raise SettingsError("lease_ttl_ms must be at least 1000")

    def __repr__(self) -> str:
        # The URLs carry passwords: a settings object printed in a traceback or a log must not show them.
        shown = ", ".join(
            f"{f.name}={redact(v) if isinstance(v := getattr(self, f.name), str) else v!r}"
            for f in fields(self)
        )
        return f"Settings({shown})"

    @property
    def keys(self) -> Keys:
        return Keys(self.stream, self.group, self.shards)

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read REDIS_URL, DATABASE_URL and ODDS_<FIELD> variables; keyword overrides (CLI flags) win.

        REDIS_URL_FILE and DATABASE_URL_FILE name files holding the URL instead, read here, once.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = field.name.upper()
            raw = _from_file_or_env(env, name) if name in UNPREFIXED else env.get(ENV_PREFIX + name)
            if raw is not None:
                values[field.name] = _parse(field.name, raw, type(getattr(cls, field.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _from_file_or_env(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name + FILE_SUFFIX)
    if path is None:
        return env.get(name)
    if name in env:
        raise SettingsError(f"{name} and {name}{FILE_SUFFIX} are both set: set one")
    try:
        # Secret files often end with a newline; a URL never does.
        return pathlib.Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"{name}{FILE_SUFFIX}: cannot read {path}: {exc.strerror}") from exc


def _parse(name: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.strip().lower() not in _TRUE + _FALSE:
            raise SettingsError(f"{name}: cannot read {raw!r} as a yes or no; use 1 or 0")
        return raw.strip().lower() in _TRUE
    try:
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} as {kind.__name__}") from exc
