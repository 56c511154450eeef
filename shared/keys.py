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
    """Key names. What belongs to one shard shares the shard stream's name as a hash tag, so that on a Redis
    Cluster a shard's stream, lease, fingerprints, counters and dead letters sit in one slot, where its
    scripts can touch them together. The stream itself keeps its plain name ("odds:snapshots:3" and
    "{odds:snapshots:3}:stats" hash alike), so a scraper still publishes with a plain XADD to it.
    """

    stream: str
    group: str
    shards: int

    def shard(self, n: int) -> str:
        return f"{self.stream}:{n}"

    def all_shards(self) -> list[str]:
        return [self.shard(n) for n in range(self.shards)]

    def shard_number(self, shard_stream: str) -> int:
        """n of the shard stream "{stream}:{n}"."""
        return int(shard_stream.rpartition(":")[2])

    @property
    def shard_pattern(self) -> str:
        """A SCAN pattern for every shard stream, also those beyond the configured count."""
        return f"{glob_escape(self.stream)}:[0-9]*"

    @property
    def patterns(self) -> tuple[str, str]:
        """SCAN patterns that together match every key of this stream name: to list or delete them all."""
        return f"{glob_escape(self.stream)}:*", f"{{{glob_escape(self.stream)}:*"

    def _of_shard(self, n: int, name: str) -> str:
        return f"{{{self.shard(n)}}}:{name}"

    def lease(self, n: int) -> str:
        return self._of_shard(n, f"lease:{self.group}")

    def dead(self, n: int) -> str:
        """Shard n's dead letters: written in the same step as the acknowledgement of their entries."""
        return self._of_shard(n, "dead")

    def fingerprints(self, n: int) -> str:
        """Fingerprints of the feeds of shard n."""
        return self._of_shard(n, "fingerprints")

    def all_fingerprints(self) -> list[str]:
        return [self.fingerprints(n) for n in range(self.shards)]

    def shard_stats(self, n: int) -> str:
        """The consumers' counters of shard n, added in the step that acknowledges what they count."""
        return self._of_shard(n, "stats")

    @property
    def meta(self) -> str:
        """What is recorded with the streams: the shard count (shared/shard_count.py)."""
        return f"{self.stream}:meta"

    @property
    def stats(self) -> str:
        """Counters not tied to one shard: entries published, entries lost to trimming, memory estimates.
        Totals add these and every shard's (shared/counters.py)."""
        return f"{self.stream}:stats"

    @property
    def members(self) -> str:
        return f"{self.stream}:members:{self.group}"

    @property
    def starts(self) -> str:
        return f"{self.stream}:starts:{self.group}"
