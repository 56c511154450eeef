"""Every Redis key the pipeline uses, derived from the stream name, and the shard function."""

from __future__ import annotations

import zlib
from dataclasses import dataclass


def shard_of(event: str, bookmaker: str, shards: int) -> int:
    """CRC-32 (IEEE, as zlib and most languages ship it) of UTF-8 "event|bookmaker", modulo the shard count.

    A bookmaker slug cannot contain "|", so the joined string names one key only.
    """
    return zlib.crc32(f"{event}|{bookmaker}".encode()) % shards


def feed_key(event: str, bookmaker: str) -> str:
    return f"{event}|{bookmaker}"


def glob_escape(text: str) -> str:
    """Escape Redis glob characters, so that a stream name is matched as itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True)
class Keys:
    stream: str
    group: str
    shards: int

    def shard(self, n: int) -> str:
        return f"{self.stream}:{n}"

    def all_shards(self) -> list[str]:
        return [self.shard(n) for n in range(self.shards)]

    @property
    def shard_pattern(self) -> str:
        """A SCAN pattern for every shard stream, also those beyond the configured count."""
        return f"{glob_escape(self.stream)}:[0-9]*"

    @property
    def meta(self) -> str:
        """What is recorded with the streams: the shard count (shared/shard_count.py)."""
        return f"{self.stream}:meta"

    def lease(self, n: int) -> str:
        return f"{self.stream}:lease:{self.group}:{n}"

    @property
    def dead(self) -> str:
        return f"{self.stream}:dead"

    @property
    def fingerprints(self) -> str:
        return f"{self.stream}:fingerprints"

    @property
    def members(self) -> str:
        return f"{self.stream}:members:{self.group}"

    @property
    def stats(self) -> str:
        return f"{self.stream}:stats"

    @property
    def starts(self) -> str:
        return f"{self.stream}:starts:{self.group}"
