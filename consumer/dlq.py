"""Dead letters: list them readably, replay them into the stream once fixed, purge them.

A dead letter is the original entry's fields plus dead_reason, dead_source_stream, dead_source_id,
dead_deliveries, dead_consumer and dead_at_ms (see ShardStreams._dead_letter). Each shard keeps its own
dead-letter stream, written in the step that acknowledges the entry; a letter is named "shard/id", since
two shards' streams can hand out the same entry id.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgpack
import structlog
from redis.cluster import RedisCluster

from shared.backlog import RawEntry
from shared.keys import Keys, shard_of
from shared.paging import pages
from shared.redis_client import Client
from shared.redis_errors import remember_script
from shared.stream_ids import format_id, next_id, stream_id

log = structlog.get_logger(__name__)

DEAD_PREFIX = b"dead_"
PAGE = 500
PREVIEW_CHARS = 160
OnProgress = Callable[[int, int], None]  # (done, total), after each step of a long command


def _quiet(done: int, total: int) -> None:
    pass


# Publish and delete in one atomic step, and only while the dead letter still exists: replaying the same
# letter twice (a retried command, two operators at once) publishes it once.
# KEYS: the dead-letter stream, its shard's counters, the stream to publish to. ARGV: the letter's id, then
# the entry's field/value pairs.
_REPLAY = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return false end
local id = redis.call('XADD', KEYS[3], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], 'replayed', 1)
return id
"""


@dataclass(frozen=True)
class DeadLetter:
    shard: int  # the shard whose dead-letter stream holds it
    entry_id: str  # its id in that stream
    fields: dict[bytes, bytes]

    @property
    def id(self) -> str:
        return f"{self.shard}/{self.entry_id}"

    def meta(self, name: str) -> str:
        return self.fields.get(DEAD_PREFIX + name.encode(), b"").decode(errors="replace")

    @property
    def reason(self) -> str:
        return self.meta("reason")

    @property
    def deliveries(self) -> int:
        raw = self.meta("deliveries")
        return int(raw) if raw.isdigit() else 0

    @property
    def original(self) -> dict[bytes, bytes]:
        """The entry as it was published: every field but the dead_* ones."""
        return {k: v for k, v in self.fields.items() if not k.startswith(DEAD_PREFIX)}

    def target_shard(self, shards: int) -> int:
        """The shard its feed belongs to; shard 0 when event or bookmaker is missing or unreadable."""
        try:
            event, bookmaker = self.fields[b"event"].decode(), self.fields[b"bookmaker"].decode()
        except (KeyError, UnicodeDecodeError):
            return 0
        return shard_of(event, bookmaker, shards)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "source_stream": self.meta("source_stream"),
            "source_id": self.meta("source_id"),
            "deliveries": self.deliveries,
            "consumer": self.meta("consumer"),
            "dead_at_ms": int(self.meta("at_ms") or 0),
            "preview": preview(self.original),
        }


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on: given ids, those whose reason contains a text, or all."""

    ids: tuple[str, ...] = ()
    reason: str | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.ids and letter.id not in self.ids and letter.entry_id not in self.ids:
            return False
        return self.reason is None or self.reason.lower() in letter.reason.lower()


@dataclass(frozen=True)
class ReplayResult:
    replayed: dict[str, str]  # dead letter id -> new entry id in its shard
    already_gone: list[str]  # replayed or purged meanwhile: nothing published
    empty: list[str]  # no original fields left to publish: kept for a person to look at


class DeadLetters:
    def __init__(self, client: Client, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        remember_script("dlq replay", _REPLAY)
        self._replay = client.register_script(_REPLAY)

    def count(self) -> int:
        pipe = self._client.pipeline(transaction=False)
        for n in range(self._keys.shards):
            pipe.xlen(self._keys.dead(n))
        return sum(int(length) for length in pipe.execute())

    def scan(self, selection: Selection = Selection()) -> Iterator[DeadLetter]:
        """The selected dead letters, oldest first over every shard, read a page at a time."""
        if selection.ids:
            for ref in selection.ids:
                for letter in self._by_ref(ref):
                    if selection.matches(letter):
                        yield letter
            return
        shards = [self._shard_letters(n) for n in range(self._keys.shards)]
        for letter in heapq.merge(*shards, key=lambda letter: stream_id(letter.entry_id)):
            if selection.matches(letter):
                yield letter

    def _shard_letters(self, n: int) -> Iterator[DeadLetter]:
        for raw_id, fields in pages(
            lambda start, size: self._range(n, min=start, count=size), _entry_id, PAGE
        ):
            yield DeadLetter(n, raw_id.decode(), fields)

    def _by_ref(self, ref: str) -> Iterator[DeadLetter]:
        """The letter "shard/id", or every shard's letter with that id when the shard is left out (ids as
        listed before dead letters were kept per shard)."""
        shard, slash, entry_id = ref.rpartition("/")
        if not slash:
            shards: Sequence[int] = range(self._keys.shards)
        elif shard.isdigit() and int(shard) < self._keys.shards:
            shards = [int(shard)]
        else:
            return
        for n in shards:
            for raw_id, fields in self._range(n, min=entry_id, max=entry_id):
                yield DeadLetter(n, raw_id.decode(), fields)

    def _range(self, n: int, **bounds: Any) -> list[RawEntry]:
        return cast(list[RawEntry], self._client.xrange(self._keys.dead(n), **bounds))

    def replay(self, selection: Selection, progress: OnProgress = _quiet) -> ReplayResult:
        """Put the selected dead letters back on their feed's shard, deleting each in the same step."""
        result = ReplayResult({}, [], [])
        letters = list(self.scan(selection))
        for done, letter in enumerate(letters, 1):
            progress(done, len(letters))
            original = letter.original
            if not original:
                result.empty.append(letter.id)
                continue
            shard = self._keys.shard(letter.target_shard(self._keys.shards))
            new_id = self._put_back(letter, shard, original)
            if new_id is None:
                result.already_gone.append(letter.id)
                continue
            result.replayed[letter.id] = new_id.decode()
            log.info(
                "dead_letter_replayed",
                dead_id=letter.id,
                stream=shard,
                entry_id=new_id.decode(),
                reason=letter.reason,
            )
        return result

    def _put_back(self, letter: DeadLetter, shard: str, original: dict[bytes, bytes]) -> bytes | None:
        """Publish the letter's entry to shard and delete the letter: in one step when one script may touch
        both, as always on one server and on a cluster when the letter is kept with its feed's shard."""
        dead, stats = self._keys.dead(letter.shard), self._keys.shard_stats(letter.shard)
        args: list[str | bytes] = [letter.entry_id]
        for name, value in original.items():
            args += [name, value]
        if not isinstance(self._client, RedisCluster) or shard == self._keys.shard(letter.shard):
            return cast(bytes | None, self._replay(keys=[dead, stats, shard], args=args))
        # The entry was read from another shard than its feed's (a producer that shards differently, or
        # the shard count changed since): two steps. A crash between them leaves the letter to be replayed
        # again, and the consumer recognises the second copy as a duplicate by its capture time.
        if not self._range(letter.shard, min=letter.entry_id, max=letter.entry_id):
            return None
        new_id = cast(bytes, self._client.xadd(shard, original))  # type: ignore[arg-type]
        if self._client.xdel(dead, letter.entry_id):
            self._client.hincrby(stats, "replayed", 1)
        return new_id

    def purge(self, selection: Selection, progress: OnProgress = _quiet) -> int:
        """Delete the selected dead letters; returns how many were deleted."""
        deleted = 0
        if selection == Selection():
            for n in range(self._keys.shards):
                deleted += self._purge_shard(n)
            progress(deleted, deleted)
        else:
            by_shard: dict[int, list[str]] = {}
            for letter in self.scan(selection):
                by_shard.setdefault(letter.shard, []).append(letter.entry_id)
            total, done = sum(len(ids) for ids in by_shard.values()), 0
            for n, ids in sorted(by_shard.items()):
                for i in range(0, len(ids), PAGE):
                    deleted += int(self._client.xdel(self._keys.dead(n), *ids[i : i + PAGE]))
                    done += len(ids[i : i + PAGE])
                    progress(done, total)
        log.info("dead_letters_purged", count=deleted)
        return deleted

    def _purge_shard(self, n: int) -> int:
        # Trim below the newest letter seen now rather than deleting the key, so a letter written meanwhile
        # is kept.
        newest = cast(list[RawEntry], self._client.xrevrange(self._keys.dead(n), count=1))
        if not newest:
            return 0
        minid = format_id(next_id(stream_id(newest[0][0])))
        return int(self._client.xtrim(self._keys.dead(n), minid=minid, approximate=False))


def preview(fields: dict[bytes, bytes], limit: int = PREVIEW_CHARS) -> str:
    """A one-line reading of an entry: its header fields as text and a summary of its msgpack data."""
    parts = [f"{k.decode(errors='replace')}={_text(v)}" for k, v in sorted(fields.items()) if k != b"data"]
    if b"data" in fields:
        parts.append("data=" + describe_data(fields[b"data"]))
    line = " ".join(parts)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe_data(data: bytes) -> str:
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types for bad input
        return f"<{len(data)} bytes, not msgpack: {type(exc).__name__}>"
    markets = doc.get("markets") if isinstance(doc, dict) else None
    if not isinstance(markets, list):
        return f"<{len(data)} bytes: {_text(repr(doc).encode())}>"
    shown = [
        f"{m.get('market')}/{m.get('specifier')}:{m.get('outcomes')}" if isinstance(m, dict) else repr(m)
        for m in markets[:2]
    ]
    more = f" +{len(markets) - 2} more" if len(markets) > 2 else ""
    return f"{len(markets)} markets [{'; '.join(shown)}{more}]"


def render(letters: Sequence[DeadLetter]) -> str:
    lines = [f"{'dead letter id':<22} {'source id':<20} {'deliveries':>10}  reason / preview"]
    for letter in letters:
        d = letter.as_dict()
        lines.append(f"{d['id']:<22} {d['source_id']:<20} {d['deliveries']:>10}  {d['reason']}")
        lines.append(f"{'':<22} {d['source_stream']:<20} {'':>10}  {d['preview']}")
    return "\n".join(lines)


def _text(raw: bytes, limit: int = 60) -> str:
    text = raw.decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _entry_id(entry: RawEntry) -> bytes:
    return entry[0]
