"""A reproducible stand-in for the bookmaker scrapers: football odds that move like real lines.

Pure (no Redis, I/O or clock): the same seed and the same cycle() calls always give the same snapshots.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from producer.football import CATALOGUE, MAX_MARKETS, MarketType, Weights, true_probabilities
from shared.wire import BOOKMAKER_SLUG, Market, Snapshot

MIN_ODDS = 1.01
# Bookmakers cap long shots far below the wire limit; the cap also prices an impossible outcome.
ODDS_CAP = 1000.0
ODDS_TICK = 0.01
_MIN_CENTS, _CAP_CENTS = round(MIN_ODDS * 100), round(ODDS_CAP * 100)
_NOISE = 0.06  # full width of one bookmaker's disagreement with the "true" probability, relative
_MAX_MOVES = 5  # markets touched by one line move

# MAX_MARKETS is football's, re-exported: callers size a SimulationSpec by it without knowing the catalogue.
__all__ = ["MAX_MARKETS", "MIN_ODDS", "ODDS_CAP", "ODDS_TICK", "SimulationSpec", "Simulator"]


def _drift(probs: tuple[float, ...], rng: random.Random) -> tuple[float, ...]:
    # A line move: one outcome firms or drifts by 2-8 % and the others make room, keeping the book's total.
    j = rng.randrange(len(probs))
    step = rng.uniform(0.02, 0.08) * (1 if rng.random() < 0.5 else -1)
    moved = max(probs[j], 1e-6) * math.exp(step)  # an outcome priced as impossible can still come alive
    total = sum(probs)
    scale = total / (total - probs[j] + moved)
    return tuple((moved if i == j else p) * scale for i, p in enumerate(probs))


def _market(kind: MarketType, probs: tuple[float, ...], overround: float) -> Market:
    # Proportional margin: every fair price shrinks by the same overround. Prices are whole cents, as
    # int(x + 0.5) rounds a positive x at a third of round()'s cost, clamped to the quotable range.
    per_cent = 100.0 / overround
    odds = {
        name: MIN_ODDS if cents <= _MIN_CENTS else ODDS_CAP if cents >= _CAP_CENTS else cents / 100
        for name, p in zip(kind.outcomes, probs, strict=True)
        for cents in (int(per_cent / p + 0.5) if p * overround * ODDS_CAP > 1.0 else _CAP_CENTS,)
    }
    return Market(kind.market, kind.specifier, odds)


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate; the defaults are a small but realistic feed."""

    events: int = 50
    bookmakers: tuple[str, ...] = ("sportybet", "bet9ja", "betking")
    markets: int = 40  # markets per snapshot, at most MAX_MARKETS
    change_rate: float = 0.2  # probability that an (event, bookmaker) snapshot moves in a cycle
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.events <= 1_000_000:  # event ids are drawn from 10 million numbers
            raise ValueError(f"events must be 1..1000000, not {self.events}")
        if not self.bookmakers or len(set(self.bookmakers)) != len(self.bookmakers):
            raise ValueError(f"bookmakers must be distinct and at least one, not {self.bookmakers!r}")
        for slug in self.bookmakers:
            if not BOOKMAKER_SLUG.fullmatch(slug.encode()):
                raise ValueError(f"bookmaker {slug!r} is not a slug of [a-z0-9_-]{{1,32}}")
        if not 1 <= self.markets <= MAX_MARKETS:
            raise ValueError(f"markets must be 1..{MAX_MARKETS}, not {self.markets}")
        if not 0.0 <= self.change_rate <= 1.0:  # also rejects NaN
            raise ValueError(f"change_rate must be within 0..1, not {self.change_rate}")


class _Book:
    __slots__ = ("event", "bookmaker", "overrounds", "probs", "markets", "current")

    def __init__(self, event: str, bookmaker: str, overrounds: list[float], probs: list[Weights]) -> None:
        self.event = event
        self.bookmaker = bookmaker
        self.overrounds = overrounds
        self.probs = probs
        self.markets = [_market(CATALOGUE[i], p, overrounds[i]) for i, p in enumerate(probs)]
        # Shared by every snapshot until the book moves, so an unchanged book costs no market building.
        self.current = tuple(self.markets)


class Simulator:
    """Snapshots of `spec.events` football matches priced by each of `spec.bookmakers`.

    The first cycle gives the opening prices; in each later cycle every (event, bookmaker) moves with
    probability `spec.change_rate`, and a move always changes at least one price.
    """

    def __init__(self, spec: SimulationSpec) -> None:
        self._spec = spec
        events = random.Random(f"{spec.seed}:events")
        books = random.Random(f"{spec.seed}:books")
        self._moves = random.Random(f"{spec.seed}:moves")
        overrounds = {}
        for bookmaker in spec.bookmakers:
            # A 5-8 % margin on two-way markets, more on many-way ones such as correct score.
            margin = books.uniform(0.05, 0.08)
            overrounds[bookmaker] = [
                1.0 + margin * (1.0 + 0.15 * (len(kind.outcomes) - 2)) for kind in CATALOGUE[: spec.markets]
            ]
        self._books: list[_Book] = []
        seen: set[int] = set()
        noise = books.random
        for _ in range(spec.events):
            # Drawn event by event, so a smaller spec with the same seed is a prefix of a bigger one.
            while (number := events.randrange(40_000_000, 50_000_000)) in seen:
                pass
            seen.add(number)
            event = f"sr:match:{number}"
            truth = true_probabilities(events, spec.markets)
            for bookmaker in spec.bookmakers:
                # Each bookmaker's own opinion of every outcome, a few percent off the truth.
                probs = [tuple(p * (1.0 + _NOISE * (noise() - 0.5)) for p in fair) for fair in truth]
                self._books.append(_Book(event, bookmaker, overrounds[bookmaker], probs))
        self._opened = False

    @property
    def spec(self) -> SimulationSpec:
        return self._spec

    def cycle(self, captured_at_ms: int) -> list[Snapshot]:
        """One snapshot per (event, bookmaker), event by event, bookmakers in spec order."""
        rate = self._spec.change_rate
        draw = self._moves.random
        moving = self._opened
        self._opened = True
        snapshots = []
        for book in self._books:
            if moving and draw() < rate:
                self._move(book)
            snapshots.append(Snapshot(book.event, book.bookmaker, captured_at_ms, book.current))
        return snapshots

    def _move(self, book: _Book) -> None:
        rng = self._moves
        count = len(book.markets)
        picks = rng.sample(range(count), min(count, rng.randint(1, _MAX_MOVES)))
        changed = False
        for i in picks:
            book.probs[i] = _drift(book.probs[i], rng)
            new = _market(CATALOGUE[i], book.probs[i], book.overrounds[i])
            if new.outcomes != book.markets[i].outcomes:
                book.markets[i] = new
                changed = True
        if not changed:
            # Small steps can round back to the same odds, or push against a clamp; a move must still show,
            # so tick one price by a cent, downwards only from the cap.
            old = book.markets[picks[0]]
            name = next(iter(old.outcomes))
            odds = old.outcomes[name]
            ticked = round(odds - ODDS_TICK if odds >= ODDS_CAP else odds + ODDS_TICK, 2)
            book.markets[picks[0]] = Market(old.market, old.specifier, {**old.outcomes, name: ticked})
        book.current = tuple(book.markets)
