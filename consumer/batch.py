"""One batch, from read entries to the Redis bookkeeping after the commit.

A batch goes through two stages. `prepare` is CPU work on the consumer's side: parse the entries and decode
what has probably changed. `commit` is mostly waiting: the Postgres transaction, then the Redis bookkeeping.
Keeping them apart lets the daemon prepare the next batch while this one commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import structlog

from consumer.errors import BatchDataError
from consumer.plan import Decoder, Entry, Parsed, Plan, Poison, memo_decoder, parse
from consumer.stream import Outcome, ShardStreams
from consumer.writer import Writer
from shared.wire import DEFAULT_LIMITS, DataLimits, InvalidEntry, decode_data

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Limits:
    max_entry_bytes: int
    max_deliveries: int
    data: DataLimits = DEFAULT_LIMITS


@dataclass(frozen=True)
class PreparedBatch:
    """A batch parsed and (mostly) decoded; committing it again after a failure needs no new work."""

    entries: list[Entry]
    parsed: list[Parsed]
    poison: list[Poison]
    decode: Decoder

    @property
    def streams(self) -> set[str]:
        return {e.stream for e in self.entries}


class BatchProcessor:
    def __init__(self, streams: ShardStreams, writer: Writer, limits: Limits) -> None:
        self._streams = streams
        self._writer = writer
        self._limits = limits

    def prepare(self, entries: list[Entry]) -> PreparedBatch:
        """Parse the batch and decode, before any transaction opens, what the Redis fingerprints say changed.

        Postgres has the last word (the writer re-plans from locked rows, decoding lazily what it must), but
        doing the bulk of the decoding here keeps row locks short and overlaps it with the previous commit.
        """
        parsed, poison = parse(entries, self._limits.max_entry_bytes, self._limits.max_deliveries)
        decode = memo_decoder(partial(decode_data, limits=self._limits.data))
        cached = self._streams.fingerprints(sorted({p.feed for p in parsed}))
        for p in parsed:
            fp, ts = cached.get(p.feed, (None, -1))
            if p.digest != fp and p.envelope.ts_ms > ts:
                try:
                    decode(p)
                except InvalidEntry:
                    pass  # memoised: the plan dead-letters it with this reason
        return PreparedBatch(entries, parsed, poison, decode)

    def commit(self, batch: PreparedBatch) -> Outcome:
        """Commit the batch to Postgres, then record fingerprints, dead letters and acks in Redis.

        Raises Transient when it must be retried; the entries then stay pending and unacknowledged.
        """
        entries = batch.entries
        outcome = Outcome()
        outcome.count("read", len(entries))
        lost = [e for e in entries if e.fields is None]
        for entry in lost:
            log.error("entry_trimmed_while_pending", stream=entry.stream, entry_id=entry.entry_id.decode())
        outcome.count("lost_trimmed", len(lost))
        poison = list(batch.poison)
        plans, db_poison = self._apply(batch.parsed, batch.decode)
        for p in plans:
            poison += p.poison
            outcome.fingerprints.update(p.final)
            outcome.count("changed", len(p.inserts))
            outcome.count("unchanged", p.unchanged)
            outcome.count("stale", len(p.stale))
            outcome.count("duplicate", len(p.duplicates))
            for s in p.stale:
                log.info(
                    "stale_entry_skipped",
                    stream=s.entry.stream,
                    entry_id=s.entry.entry_id.decode(),
                    feed=s.feed,
                    ts=s.envelope.ts_ms,
                )
        poison += db_poison
        for bad in poison:
            log.warning(
                "entry_dead_lettered",
                stream=bad.entry.stream,
                entry_id=bad.entry.entry_id.decode(),
                reason=bad.reason,
                deliveries=bad.entry.deliveries,
            )
        outcome.dead = poison
        outcome.count("dead_lettered", len(poison))
        outcome.ack(entries)
        self._streams.finish(outcome)
        return outcome

    def _apply(self, parsed: list[Parsed], decode: Decoder) -> tuple[list[Plan], list[Poison]]:
        """Write the batch; when Postgres rejects some entry's data, split the batch to find it.

        One bad row must not fail the whole batch: halves are written on their own until the culprit stands
        alone and is dead-lettered. Sorting by feed and capture time first keeps each feed's entries in
        order across the halves.
        """
        if not parsed:
            return [], []
        try:
            return [self._writer.apply(parsed, decode)], []
        except BatchDataError as exc:
            if len(parsed) == 1:
                return [], [Poison(parsed[0].entry, str(exc))]
            ordered = sorted(parsed, key=lambda p: (p.feed, p.envelope.ts_ms))
            mid = len(ordered) // 2
            left_plans, left_poison = self._apply(ordered[:mid], decode)
            right_plans, right_poison = self._apply(ordered[mid:], decode)
            return left_plans + right_plans, left_poison + right_poison
