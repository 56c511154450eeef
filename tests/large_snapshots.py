"""Snapshots far larger than the simulator's: thousands of markets each, as a player-props book lists.

Shared by the fault case and the bench row that check that memory, Redis calls and transactions stay
bounded by the batch however large each snapshot is. The markets are built once and reused, so a test
spends its time in the pipeline, not in building snapshots.
"""

from __future__ import annotations

import random

from shared.wire import Market, Snapshot

MARKETS = 5000


class LargeBook:
    """Feeds of `markets` two-way markets each; every cycle moves one market per feed."""

    def __init__(
        self, events: int, bookmakers: tuple[str, ...], markets: int = MARKETS, seed: int = 1
    ) -> None:
        rng = random.Random(seed)
        self._base = [
            Market(f"player {i // 10:04d} shots", f"line={i % 10}.5", _two_way(rng)) for i in range(markets)
        ]
        self._feeds = [(f"sr:match:large-{e}", b) for e in range(events) for b in bookmakers]
        self._rng = rng
        self._cycle = 0

    @property
    def feeds(self) -> int:
        return len(self._feeds)

    def cycle(self, ts_ms: int) -> list[Snapshot]:
        self._cycle += 1
        snapshots = []
        for i, (event, bookmaker) in enumerate(self._feeds):
            markets = list(self._base)
            moved = (self._cycle * 7919 + i) % len(markets)
            base = markets[moved]
            markets[moved] = Market(base.market, base.specifier, _two_way(self._rng))
            snapshots.append(Snapshot(event, bookmaker, ts_ms, tuple(markets)))
        return snapshots


def _two_way(rng: random.Random) -> dict[str, float]:
    over = round(rng.uniform(1.2, 4.0), 2)
    return {"Over": over, "Under": round(max(1.01, over / (over - 1) * 0.94), 2)}
