"""One batch, from read entries to the Redis bookkeeping after the commit.

A batch goes through two stages. `prepare` is CPU work on the consumer's side: parse the entries and decode
what has probably changed. `commit` is mostly waiting: the Postgres transactions, then the Redis
bookkeeping. Keeping them apart lets the daemon prepare the next batch while this one commits.

A batch commits in parts of a bounded number of rows, each in its own transaction, and remembers what is
committed: a retry after a failure goes on from there. So a batch of large snapshots never has to fit one
transaction within the database deadline, and a failure in the Redis bookkeeping after the commit never
applies the batch again (which would count its changes as duplicates of themselves).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from consumer.decoding import ReusingDecoder
from consumer.errors import BatchDataError, DeadlineExceeded
from consumer.plan import Decoder, Entry, Parsed, Plan, Poison, memo_decoder, parse
from consumer.stream import Outcome, ShardStreams
from consumer.writer import Writer
from shared.wire import DEFAULT_LIMITS, DataLimits, InvalidEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Limits:
    max_entry_bytes: int
    max_deliveries: int
    max_rows: int  # rows one transaction writes at most
    decoded_markets: int  # markets of the feeds' last payloads kept to decode less (ODDS_MARKET_CACHE)
    data: DataLimits = DEFAULT_LIMITS


@dataclass
class PreparedBatch:
    """A batch parsed and (mostly) decoded, and how much of it is committed: a retry redoes nothing."""

    entries: list[Entry]
    # In the order read: parts are cut from it as batches are cut from a shard, each feed's entries in order
    parsed: list[Parsed]
    rows: list[int]  # rows each parsed entry may write: its markets and the snapshot row, 1 if unchanged
    poison: list[Poison]
    decode: Decoder
    committed: int = 0  # how many of parsed are committed in Postgres
    plans: list[Plan] = field(default_factory=list)
    db_poison: list[Poison] = field(default_factory=list)
    outcome: Outcome | None = None  # once every part is committed: what Redis must record

    @property
    def streams(self) -> set[str]:
        return {e.stream for e in self.entries}

    @property
    def data_bytes(self) -> int:
        return sum(len(p.envelope.data) for p in self.parsed)


class BatchProcessor:
    def __init__(self, streams: ShardStreams, writer: Writer, limits: Limits) -> None:
        self._streams = streams
        self._writer = writer
        self._limits = limits
        # Rows per transaction: halved when one misses the database deadline, grown back as parts commit.
        self.part_rows = limits.max_rows
        # Across batches: an unchanged snapshot in any stable byte order, and each market whose bytes did
        # not change since the feed's last payload, is not decoded again.
        self._decoder = ReusingDecoder(limits.decoded_markets, limits.data)

    def prepare(self, entries: list[Entry]) -> PreparedBatch:
        """Parse the batch and decode, before any transaction opens, what the Redis fingerprints say changed.

        Postgres has the last word (the writer re-plans from locked rows, decoding lazily what it must), but
        doing the bulk of the decoding here keeps row locks short and overlaps it with the previous commit.
        """
        parsed, poison = parse(entries, self._limits.max_entry_bytes, self._limits.max_deliveries)
        decode = memo_decoder(self._decoder)
        feeds: dict[str, set[str]] = {}
        for p in parsed:
            feeds.setdefault(p.entry.stream, set()).add(p.feed)
        cached = self._streams.fingerprints({stream: sorted(names) for stream, names in feeds.items()})
        rows = []
        for p in parsed:
            fp, ts = cached.get(p.feed, (None, -1))
            markets = 0
            if p.digest != fp and p.envelope.ts_ms > ts:
                try:
                    markets = len(decode(p).markets)
                except InvalidEntry:
                    pass  # memoised: the plan dead-letters it with this reason
            rows.append(1 + markets)
        return PreparedBatch(entries, parsed, rows, poison, decode)

    def commit(self, batch: PreparedBatch) -> Outcome:
        """Commit the batch to Postgres in parts, then record fingerprints, dead letters and acks in Redis.

        Raises Transient when it must be retried; the entries then stay pending and unacknowledged, and the
        parts already committed stay committed.
        """
        while batch.committed < len(batch.parsed):
            part, rows = self._next_part(batch)
            try:
                plans, poison = self._apply(part, batch.decode)
            except DeadlineExceeded:
                # The same transaction would miss the deadline again: retry the rest in smaller parts.
                self.part_rows = max(1, rows // 2)
                log.warning("batch_part_shrunk", rows=rows, part_rows=self.part_rows)
                raise
            batch.plans += plans
            batch.db_poison += poison
            batch.committed += len(part)
            self.part_rows = min(self._limits.max_rows, self.part_rows + self.part_rows // 4 + 1)
        if batch.outcome is None:
            batch.outcome = self._outcome(batch)
        self._streams.finish(batch.outcome)
        return batch.outcome

    def _next_part(self, batch: PreparedBatch) -> tuple[list[Parsed], int]:
        """The next entries to commit, as many as part_rows allows (at least one), and their rows."""
        start = end = batch.committed
        rows = 0
        while end < len(batch.parsed) and (end == start or rows + batch.rows[end] <= self.part_rows):
            rows += batch.rows[end]
            end += 1
        return batch.parsed[start:end], rows

    def _outcome(self, batch: PreparedBatch) -> Outcome:
        entries = batch.entries
        outcome = Outcome()
        outcome.count("read", len(entries))
        lost = [e for e in entries if e.fields is None]
        for entry in lost:
            log.error("entry_trimmed_while_pending", stream=entry.stream, entry_id=entry.entry_id.decode())
        outcome.count("lost_trimmed", len(lost))
        poison = list(batch.poison)
        stream_of = {p.feed: p.entry.stream for p in batch.parsed}
        for p in batch.plans:
            poison += p.poison
            for feed, value in p.final.items():
                outcome.fingerprint(stream_of[feed], feed, value)
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
        poison += batch.db_poison
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
        return outcome

    def _apply(self, parsed: list[Parsed], decode: Decoder) -> tuple[list[Plan], list[Poison]]:
        """Write entries in one transaction; when Postgres rejects some entry's data, split them to find it.

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
