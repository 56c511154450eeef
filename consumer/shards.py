"""What a consumer does next with each shard it holds: the one place that decides, so feeds stay in order.

A shard's entries must be applied in stream order. A consumer that gains a shard, or regains one it lost
for a moment, may find entries of it pending under its own name (read before, never acknowledged) or under
another consumer's; reading new entries before those would make them stale and skip their changes. So a
shard goes through these states, and only a LIVE one is read with ">" (new entries):

    gained ──► OWN_HISTORY ──(history read to its end)──► CLAIMING ──(nothing claimed)──► LIVE
                   ▲                                         │                            │
                   └──────────(claimed some: read them)──────┘                            │
                   └───────(a read failed, a batch was dropped or abandoned)──────────────┘
    above our share ──► RELEASING ──(no batch in hand holds it)──► released

A lost shard simply leaves. This module does no I/O: the daemon reports what happened, and asks what to
read, whether a batch read ahead is still good to apply, and which shards it may give back.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable


class State(enum.Enum):
    OWN_HISTORY = "own_history"  # re-reading what is pending under our own name, from id 0
    CLAIMING = "claiming"  # our history is done; what others left pending is to be claimed
    LIVE = "live"  # reading new entries
    RELEASING = "releasing"  # above our share: given back once no batch in hand holds its entries


class ShardStates:
    def __init__(self) -> None:
        self._states: dict[int, State] = {}

    def __repr__(self) -> str:
        return f"ShardStates({ {n: s.value for n, s in sorted(self._states.items())} })"

    def state(self, n: int) -> State | None:
        return self._states.get(n)

    @property
    def held(self) -> set[int]:
        return set(self._states)

    @property
    def live(self) -> set[int]:
        return self._in(State.LIVE)

    @property
    def releasing(self) -> set[int]:
        return self._in(State.RELEASING)

    # --- what happened ------------------------------------------------------------------------------

    def follow(self, owned: Collection[int], gained: Collection[int] = ()) -> None:
        """Follow the leases: shards no longer owned leave, shards owned or gained anew start over."""
        self.lost(self.held - set(owned))
        self.gained((set(owned) - self.held) | set(gained))

    def gained(self, shards: Iterable[int]) -> None:
        """New leases: each starts from its own history, even a shard regained right after losing it,
        since another consumer may have read some of its entries meanwhile."""
        for n in shards:
            self._states[n] = State.OWN_HISTORY

    def lost(self, shards: Iterable[int]) -> None:
        for n in shards:
            self._states.pop(n, None)

    def above_share(self, shards: Iterable[int]) -> None:
        for n in shards:
            if n in self._states:
                self._states[n] = State.RELEASING

    def released(self) -> set[int]:
        """Forget the shards that were given back; returns them."""
        gone = self.releasing
        self.lost(gone)
        return gone

    def history_drained(self, n: int) -> bool:
        """Our own history of shard n is read to its end; True when what others left is to be claimed."""
        if self._states.get(n) is not State.OWN_HISTORY:
            return False
        self._states[n] = State.CLAIMING
        return True

    def claimed(self, n: int, moved: int) -> None:
        """Claimed entries are ours now and come first: read them from our history; none left: live."""
        if self._states.get(n) is State.CLAIMING:
            self._states[n] = State.OWN_HISTORY if moved else State.LIVE

    def reread(self, shards: Collection[int]) -> None:
        """Entries of these shards may be pending under our name unseen (a failed read, a batch dropped or
        abandoned): their history comes before anything newer. Shards being given back stay so."""
        for n in shards:
            if self._states.get(n) in (State.LIVE, State.CLAIMING):
                self._states[n] = State.OWN_HISTORY

    def reread_all(self) -> None:
        self.reread(self.held)

    # --- what to do next ----------------------------------------------------------------------------

    def next_read(self) -> dict[int, State]:
        """The shards to read now, each LIVE (new entries) or OWN_HISTORY (from id 0)."""
        return {
            n: State.LIVE if s is State.LIVE else State.OWN_HISTORY
            for n, s in self._states.items()
            if s is not State.RELEASING
        }

    def may_read_ahead(self) -> bool:
        """Whether the next batch may be read while this one commits: only when every shard is live, since
        re-reading a history now would return the very entries that are committing."""
        return bool(self._states) and all(s is State.LIVE for s in self._states.values())

    def still_valid(self, shards: Collection[int]) -> bool:
        """Whether a batch read ahead of these shards may be applied: every one still ours and live, or
        being given back (it was read while live, in order; applying it spares the next owner a claim)."""
        return all(self._states.get(n) in (State.LIVE, State.RELEASING) for n in shards)

    def may_release(self, in_hand: Collection[int]) -> bool:
        """Whether the shards being given back hold nothing of the batches in hand."""
        return bool(self.releasing) and not (self.releasing & set(in_hand))

    def _in(self, state: State) -> set[int]:
        return {n for n, s in self._states.items() if s is state}


def redelivery_count(count: int, deliveries: int) -> int:
    """Entries to re-read from a history whose oldest entry was delivered that often already.

    A crash and a reclaim deliver an entry twice. More means that something fails on the batch every time,
    most often a crash that the batch triggers, and every re-read raises the delivery count of all it
    holds, until ODDS_MAX_DELIVERIES dead-letters them all, good entries with the culprit. Re-reading a
    quarter as many each time lets the entries before the culprit commit, and leaves it alone in its batch
    a few deliveries later, to be dead-lettered on its own.
    """
    return max(1, count >> (2 * max(0, deliveries - 2)))
