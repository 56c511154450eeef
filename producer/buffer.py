"""The producer's bounded buffer of entries waiting for Redis, and what it gives up when it is full.

Odds are last-value-wins per feed. Of two buffered snapshots of one feed the older is superseded: losing it
costs one point of that feed's history, while dropping the only snapshot of another feed loses that feed's
latest odds until its next cycle. So a full buffer drops superseded entries first, oldest first, and only
then the oldest entry of all. What is dropped is counted per reason.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from shared.wire import Snapshot

Feed = tuple[str, str]


class State(Enum):
    QUEUED = 1  # in the buffer
    SENDING = 2  # taken out by a sender; it comes back with put_back if the send fails
    GONE = 3  # in Redis, or dropped


@dataclass(slots=True, eq=False)
class Pending:
    """One stream entry on its way to Redis."""

    stream: str
    fields: dict[str, bytes]
    snapshot: Snapshot  # for delivery reports
    state: State = State.QUEUED

    @property
    def feed(self) -> Feed:
        return self.snapshot.event, self.snapshot.bookmaker

    @property
    def size(self) -> int:
        """Bytes the entry carries, the bulk of what it adds to Redis's memory."""
        return sum(map(len, self.fields.values()))


SUPERSEDED = "superseded"
OLDEST = "oldest"


class SendBuffer:
    """Entries in publish order, at most `limit` of them; senders take them from the front.

    Dropped entries leave a tombstone in the queue (their fields released) that is skipped and compacted
    away, so dropping from the middle costs O(1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the buffer must hold at least one entry")
        self._limit = limit
        self._queue: deque[Pending] = deque()
        self._superseded: deque[Pending] = deque()  # candidates; entries no longer queued are skipped
        self._newest: dict[Feed, Pending] = {}  # each feed's newest entry not yet in Redis
        self._queued = 0
        self._sending = 0
        self._tombstones = 0
        self.dropped: Counter[str] = Counter()

    def __len__(self) -> int:
        """Entries in the buffer, ready to be taken."""
        return self._queued

    @property
    def waiting(self) -> int:
        """Entries not in Redis yet: in the buffer, or taken by a sender that has not finished."""
        return self._queued + self._sending

    def append(self, entry: Pending) -> int:
        """Add an entry at the back; returns how many entries the limit made it drop."""
        previous = self._newest.get(entry.feed)
        if previous is not None:
            self._superseded.append(previous)
        self._newest[entry.feed] = entry
        self._queue.append(entry)
        self._queued += 1
        return self._enforce_limit()

    def take(self, count: int) -> list[Pending]:
        """Up to count entries from the front, in order; they are the caller's until sent or put back."""
        taken: list[Pending] = []
        while self._queue and len(taken) < count:
            entry = self._queue.popleft()
            if entry.state is State.GONE:
                self._tombstones -= 1
                continue
            entry.state = State.SENDING
            taken.append(entry)
        self._queued -= len(taken)
        self._sending += len(taken)
        return taken

    def sent(self, entries: Iterable[Pending]) -> None:
        for entry in entries:
            self._forget(entry)
            self._sending -= 1
        if len(self._superseded) > 2 * self._queued + 1024:
            # After an outage the candidates are mostly sent entries: keep only the live ones.
            self._superseded = deque(e for e in self._superseded if e.state is State.QUEUED)

    def put_back(self, entries: list[Pending]) -> int:
        """Return entries that could not be sent to the front, in their order; returns how many the limit
        then dropped (publishing may have filled the buffer while they were away)."""
        for entry in reversed(entries):
            entry.state = State.QUEUED
            self._queue.appendleft(entry)
            if self._newest.get(entry.feed) is not entry:
                self._superseded.append(entry)
        self._queued += len(entries)
        self._sending -= len(entries)
        return self._enforce_limit()

    def drop(self, entries: Iterable[Pending], reason: str) -> int:
        """Give up entries a sender holds: counted as dropped for the reason."""
        count = 0
        for entry in entries:
            self._forget(entry)
            self._sending -= 1
            self.dropped[reason] += 1
            count += 1
        return count

    def _enforce_limit(self) -> int:
        dropped = 0
        while self._queued > self._limit:
            entry, reason = self._victim()
            self._forget(entry)
            self._queued -= 1
            self._tombstones += 1
            self.dropped[reason] += 1
            dropped += 1
        if self._tombstones > self._queued:
            self._compact()
        return dropped

    def _victim(self) -> tuple[Pending, str]:
        while self._superseded:
            entry = self._superseded.popleft()
            if entry.state is State.QUEUED:
                return entry, SUPERSEDED
        return next(e for e in self._queue if e.state is State.QUEUED), OLDEST

    def _forget(self, entry: Pending) -> None:
        entry.state = State.GONE
        entry.fields = {}  # in Redis or dropped: its data is no longer needed here
        if self._newest.get(entry.feed) is entry:
            del self._newest[entry.feed]

    def _compact(self) -> None:
        self._queue = deque(e for e in self._queue if e.state is not State.GONE)
        self._superseded = deque(e for e in self._superseded if e.state is State.QUEUED)
        self._tombstones = 0
