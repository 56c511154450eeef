"""A reproducible stand-in for the bookmaker scrapers: football odds that move like real lines.

Pure (no Redis, I/O or clock): the same seed and the same cycle() calls always give the same snapshots.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from shared.wire import BOOKMAKER_SLUG, Market, Snapshot

MIN_ODDS = 1.01
# Bookmakers cap long shots far below the wire limit; the cap also prices an impossible outcome.
ODDS_CAP = 1000.0
ODDS_TICK = 0.01
_MIN_CENTS, _CAP_CENTS = round(MIN_ODDS * 100), round(ODDS_CAP * 100)
# Goals 0..7 per match and 0..5 per half leave Poisson tails under ~1 % at realistic scoring rates.
_FT_GOALS = 8
_HALF_GOALS = 6
_FIRST_HALF_SHARE = 0.45
_NOISE = 0.06  # full width of one bookmaker's disagreement with the "true" probability, relative
_MAX_MOVES = 5  # markets touched by one line move

Weights = tuple[float, ...]
# Per outcome, the score-grid cells it wins, listed once per stake unit won (half a stake in markets with
# quarter lines, else a whole one); the cells listed alike for units settled, None if nothing is refunded;
# the units in a stake. Event independent, so pricing an event is only sums of cell probabilities.
_Table = tuple[tuple[tuple[int, ...], ...], tuple[int, ...] | None, int]

_FT, _1H, _2H, _HALVES = "FT", "1H", "2H", "HALVES"
_1X2 = ("1", "X", "2")
_OU = ("Over", "Under")
_SIDES = ("Home", "Away")
_MARGINS = ("1 by 1", "1 by 2", "1 by 3+", "X", "2 by 1", "2 by 2", "2 by 3+")
_both_score: Callable[[int, int], bool] = lambda h, a: h > 0 and a > 0  # noqa: E731


@dataclass(frozen=True, slots=True)
class _MarketType:
    market: str
    specifier: str
    period: str  # FT, 1H, 2H settle a (home, away) score; HALVES settle (home 1H, away 1H, home 2H, away 2H)
    outcomes: tuple[str, ...]
    settle: Callable[..., Weights]  # score -> share of the stake each outcome wins: 0, 0.5 or 1


def _res(home: int, away: int) -> int:
    return 0 if home > away else 1 if home == away else 2


def _hot(size: int, index: int) -> Weights:
    return tuple(1.0 if i == index else 0.0 for i in range(size))


def _two_way(value: int, line: float) -> Weights:
    # Quarter lines (2.25, -0.75) are half the stake on each neighbouring line; whole lines can push.
    parts = (line - 0.25, line + 0.25) if (line * 4) % 2 else (line,)
    share = 1.0 / len(parts)
    return (share * sum(value > p for p in parts), share * sum(value < p for p in parts))


def _margin(h: int, a: int) -> int:
    d = h - a
    return 3 if d == 0 else min(d, 3) - 1 if d > 0 else 3 + min(-d, 3)


def _m1x2(name: str, period: str) -> _MarketType:
    return _MarketType(name, "", period, _1X2, lambda h, a: _hot(3, _res(h, a)))


def _dc(name: str, period: str) -> _MarketType:
    wins = ((1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))  # 1X, 12, X2 by result 1, X, 2
    return _MarketType(name, "", period, ("1X", "12", "X2"), lambda h, a: wins[_res(h, a)])


def _yn(name: str, period: str, hit: Callable[..., bool], specifier: str = "") -> _MarketType:
    return _MarketType(name, specifier, period, ("Yes", "No"), lambda *score: _hot(2, not hit(*score)))


def _ou(name: str, period: str, total: float, team: int | None = None) -> _MarketType:
    def settle(h: int, a: int) -> Weights:
        return _two_way(h + a if team is None else (h, a)[team], total)

    return _MarketType(name, f"total={total:g}", period, _OU, settle)


def _ah(name: str, period: str, hcp: float) -> _MarketType:
    # The handicap is the home side's: "hcp=-1.5" means home must win by two.
    return _MarketType(name, f"hcp={hcp:g}", period, ("1", "2"), lambda h, a: _two_way(h - a, -hcp))


def _eh(name: str, period: str, home: int, away: int) -> _MarketType:
    settle = lambda h, a: _hot(3, _res(h + home, a + away))  # noqa: E731
    return _MarketType(name, f"hcp={home}:{away}", period, _1X2, settle)


def _exact(name: str, period: str, top: int) -> _MarketType:
    names = tuple(str(n) for n in range(top)) + (f"{top}+",)
    return _MarketType(name, "", period, names, lambda h, a: _hot(top + 1, min(h + a, top)))


def _cs(name: str, period: str, top: int) -> _MarketType:
    names = tuple(f"{h}:{a}" for h in range(top + 1) for a in range(top + 1)) + ("Other",)
    other = len(names) - 1
    settle = lambda h, a: _hot(other + 1, h * (top + 1) + a if max(h, a) <= top else other)  # noqa: E731
    return _MarketType(name, "", period, names, settle)


def _combo(prefix: str, first: _MarketType, second: _MarketType) -> _MarketType:
    # Both legs must win; only push-free legs are combined, so products of 0/1 shares suffice.
    names = tuple(f"{x} & {y}" for x in first.outcomes for y in second.outcomes)
    settle = lambda *s: tuple(x * y for x in first.settle(*s) for y in second.settle(*s))  # noqa: E731
    name = f"{prefix}{first.market} & {second.market}"
    return _MarketType(name, first.specifier or second.specifier, first.period, names, settle)


def _lines(low: float, high: float, step: float) -> list[float]:
    # Multiples of a quarter are exact binary fractions, so these compare and format exactly.
    return [low + step * i for i in range(round((high - low) / step) + 1)]


def _halves() -> list[_MarketType]:
    kinds = [
        _MarketType(
            "Half Time/Full Time",
            "",
            _HALVES,
            tuple(f"{x}/{y}" for x in _1X2 for y in _1X2),
            lambda h1, a1, h2, a2: _hot(9, _res(h1, a1) * 3 + _res(h1 + h2, a1 + a2)),
        ),
        _MarketType(
            "Highest Scoring Half",
            "",
            _HALVES,
            ("1st", "Equal", "2nd"),
            lambda h1, a1, h2, a2: _hot(3, _res(h1 + a1, h2 + a2)),
        ),
        _yn("Both Halves Over", _HALVES, lambda h1, a1, h2, a2: min(h1 + a1, h2 + a2) > 1, "total=1.5"),
        _yn("Both Halves Over", _HALVES, lambda h1, a1, h2, a2: min(h1 + a1, h2 + a2) > 0, "total=0.5"),
    ]
    for t, side in enumerate(_SIDES):
        won = 2 * t  # the _res() of a half this side won
        kinds += [
            _yn(f"{side} Scores In Both Halves", _HALVES, lambda *s, t=t: s[t] > 0 and s[t + 2] > 0),
            _yn(f"{side} Wins Either Half", _HALVES, lambda *s, w=won: w in (_res(*s[:2]), _res(*s[2:]))),
            _yn(f"{side} Wins Both Halves", _HALVES, lambda *s, w=won: _res(*s[:2]) == w == _res(*s[2:])),
        ]
    return kinds


def _period(pre: str, p: str, goals: float, hcp: float) -> list[_MarketType]:
    # The usual markets of a match or a half; `goals` and `hcp` are the outermost half lines offered.
    full = p == _FT
    both = _yn("Both Teams To Score", p, _both_score)
    kinds = [
        _m1x2(f"{pre}1X2", p),
        _dc(f"{pre}Double Chance", p),
        _yn(f"{pre}{both.market}", p, _both_score),
        _MarketType(f"{pre}Draw No Bet", "", p, ("1", "2"), lambda h, a: _two_way(h - a, 0)),
        _cs(f"{pre}Correct Score", p, 3 if full else 2),
        _exact(f"{pre}Exact Goals", p, 6 if full else 3),
        _MarketType(f"{pre}Odd/Even", "", p, ("Odd", "Even"), lambda h, a: _hot(2, (h + a) % 2 == 0)),
    ]
    kinds += [_ou(f"{pre}Over/Under", p, t) for t in _lines(0.5, goals, 1)]
    kinds += [_ah(f"{pre}Asian Handicap", p, x) for x in _lines(-hcp, hcp, 1)]
    for i, side in enumerate(_SIDES):
        kinds += [_ou(f"{pre}{side} Total", p, t, i) for t in _lines(0.5, goals / 2, 1)]
    for n in range(1, 5 if full else 3):
        kinds += [_eh(f"{pre}European Handicap", p, 0, n), _eh(f"{pre}European Handicap", p, n, 0)]
    totals = (1.5, 2.5, 3.5, 4.5) if full else (1.5, 2.5)
    kinds += [_combo(pre, _m1x2("1X2", p), both)]
    kinds += [_combo(pre, _m1x2("1X2", p), _ou("Over/Under", p, t)) for t in totals]
    kinds += [_combo(pre, _dc("Double Chance", p), both)]
    kinds += [_combo(pre, _dc("Double Chance", p), _ou("Over/Under", p, t)) for t in totals[:-1]]
    if full:
        for i, side in enumerate(_SIDES):  # s[i] is this side's goals, s[1 - i] the other's
            kinds += [_yn(f"{side} Clean Sheet", p, lambda *s, i=i: s[1 - i] == 0)]
            kinds += [_yn(f"{side} Win To Nil", p, lambda *s, i=i: s[i] > s[1 - i] == 0)]
        kinds += [_MarketType("Winning Margin", "", p, _MARGINS, lambda h, a: _hot(7, _margin(h, a)))]
    return kinds


def _asian(pre: str, p: str, goals: float, hcp: float) -> list[_MarketType]:
    # The whole and quarter lines Asian books price, the deep end of the catalogue.
    kinds = [_ou(f"{pre}Over/Under", p, t) for t in _lines(0.75, goals - 0.25, 0.25)]
    return kinds + [_ah(f"{pre}Asian Handicap", p, x) for x in _lines(-hcp - 0.25, hcp + 0.25, 0.25)]


# The markets every bookmaker lists come first, so any prefix of the catalogue looks like a real book.
_HEAD = (
    "1X2",
    "Over/Under|total=2.5",
    "Both Teams To Score",
    "Double Chance",
    "Draw No Bet",
    "Asian Handicap|hcp=-0.5",
    "Over/Under|total=1.5",
    "Over/Under|total=3.5",
    "Half Time 1X2",
    "Correct Score",
    "Half Time/Full Time",
    "Odd/Even",
    "Half Time Over/Under|total=0.5",
    "Half Time Over/Under|total=1.5",
    "Asian Handicap|hcp=0.5",
    "Asian Handicap|hcp=-1.5",
    "Asian Handicap|hcp=1.5",
    "Over/Under|total=0.5",
    "Over/Under|total=4.5",
    "Exact Goals",
    "Home Total|total=0.5",
    "Home Total|total=1.5",
    "Away Total|total=0.5",
    "Away Total|total=1.5",
    "Half Time Double Chance",
    "Half Time Both Teams To Score",
    "2nd Half 1X2",
    "2nd Half Over/Under|total=0.5",
    "2nd Half Over/Under|total=1.5",
    "Home Clean Sheet",
    "Away Clean Sheet",
    "European Handicap|hcp=0:1",
    "European Handicap|hcp=1:0",
    "Home Win To Nil",
    "Away Win To Nil",
    "Highest Scoring Half",
    "Both Halves Over|total=1.5",
    "Asian Handicap|hcp=-2.5",
    "Asian Handicap|hcp=2.5",
    "Over/Under|total=5.5",
    "Winning Margin",
)


def _build_catalogue() -> tuple[_MarketType, ...]:
    kinds = _period("", _FT, 9.5, 5.5) + _halves() + _period("Half Time ", _1H, 3.5, 2.5)
    kinds += _period("2nd Half ", _2H, 3.5, 2.5) + _asian("", _FT, 9.5, 5.5)
    kinds += _asian("Half Time ", _1H, 3.5, 2.5) + _asian("2nd Half ", _2H, 3.5, 2.5)
    by_key: dict[tuple[str, str], _MarketType] = {}
    for kind in kinds:
        by_key.setdefault((kind.market, kind.specifier), kind)
    head = [by_key[(market, specifier)] for market, _, specifier in (e.partition("|") for e in _HEAD)]
    return tuple(dict.fromkeys(head + list(by_key.values())))


_CATALOGUE = _build_catalogue()
MAX_MARKETS = len(_CATALOGUE)


def _scores(period: str) -> list[tuple[int, ...]]:
    size = _FT_GOALS if period == _FT else _HALF_GOALS
    grid: list[tuple[int, ...]] = [(h, a) for h in range(size) for a in range(size)]
    return [first + second for first in grid for second in grid] if period == _HALVES else grid


@cache
def _table(index: int) -> _Table:
    kind = _CATALOGUE[index]
    scores = _scores(kind.period)
    units = 2 if any(0.0 < w < 1.0 for score in scores for w in kind.settle(*score)) else 1
    wins: list[list[int]] = [[] for _ in kind.outcomes]
    settled: list[int] = []
    for cell, score in enumerate(scores):
        won = [round(units * w) for w in kind.settle(*score)]
        for i, n in enumerate(won):
            wins[i] += [cell] * n
        settled += [cell] * max(won)
    return tuple(map(tuple, wins)), tuple(settled) if len(settled) < units * len(scores) else None, units


def _probabilities(table: _Table, cells: Sequence[float]) -> tuple[float, ...]:
    # Cells sum to 1, so without refunds the settled mass is one stake; refunds are priced out, as the
    # fair price of a whole or quarter line is wins / (wins + losses).
    cell = cells.__getitem__
    wins, settled, units = table
    mass = float(units) if settled is None else sum(map(cell, settled))
    return tuple(sum(map(cell, won)) / mass for won in wins)


def _poisson(rate: float, size: int) -> list[float]:
    pmf = [rate**n / math.factorial(n) for n in range(size)]  # e^-rate cancels out in the normalising
    total = sum(pmf)
    return [p / total for p in pmf]


def _cells(home_rate: float, away_rate: float, size: int) -> list[float]:
    away = _poisson(away_rate, size)
    return [h * a for h in _poisson(home_rate, size) for a in away]


def _true_probabilities(rng: random.Random, count: int) -> list[tuple[float, ...]]:
    # Independent Poisson goals per side (Maher's model); the halves are independent too, so the match is
    # Poisson with the summed rate and cross-half markets use the product of the two half grids.
    goals = rng.uniform(2.0, 3.2)
    home_share = min(0.8, max(0.2, rng.gauss(0.55, 0.12)))
    home, away = goals * home_share, goals * (1.0 - home_share)
    first, second = _FIRST_HALF_SHARE, 1.0 - _FIRST_HALF_SHARE
    cells = {
        _FT: _cells(home, away, _FT_GOALS),
        _1H: _cells(home * first, away * first, _HALF_GOALS),
        _2H: _cells(home * second, away * second, _HALF_GOALS),
    }
    if any(_CATALOGUE[i].period == _HALVES for i in range(count)):
        cells[_HALVES] = [x * y for x in cells[_1H] for y in cells[_2H]]
    return [_probabilities(_table(i), cells[_CATALOGUE[i].period]) for i in range(count)]


def _drift(probs: tuple[float, ...], rng: random.Random) -> tuple[float, ...]:
    # A line move: one outcome firms or drifts by 2-8 % and the others make room, keeping the book's total.
    j = rng.randrange(len(probs))
    step = rng.uniform(0.02, 0.08) * (1 if rng.random() < 0.5 else -1)
    moved = max(probs[j], 1e-6) * math.exp(step)  # an outcome priced as impossible can still come alive
    total = sum(probs)
    scale = total / (total - probs[j] + moved)
    return tuple((moved if i == j else p) * scale for i, p in enumerate(probs))


def _market(kind: _MarketType, probs: tuple[float, ...], overround: float) -> Market:
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
        self.markets = [_market(_CATALOGUE[i], p, overrounds[i]) for i, p in enumerate(probs)]
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
                1.0 + margin * (1.0 + 0.15 * (len(kind.outcomes) - 2)) for kind in _CATALOGUE[: spec.markets]
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
            truth = _true_probabilities(events, spec.markets)
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
            new = _market(_CATALOGUE[i], book.probs[i], book.overrounds[i])
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
