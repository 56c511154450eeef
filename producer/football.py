"""The football market catalogue and its Poisson pricing: the markets a simulated book lists, at fair odds."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

# Goals 0..7 per match and 0..5 per half leave Poisson tails under ~1 % at realistic scoring rates.
_FT_GOALS = 8
_HALF_GOALS = 6
_FIRST_HALF_SHARE = 0.45

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
class MarketType:
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


def _m1x2(name: str, period: str) -> MarketType:
    return MarketType(name, "", period, _1X2, lambda h, a: _hot(3, _res(h, a)))


def _dc(name: str, period: str) -> MarketType:
    wins = ((1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))  # 1X, 12, X2 by result 1, X, 2
    return MarketType(name, "", period, ("1X", "12", "X2"), lambda h, a: wins[_res(h, a)])


def _yn(name: str, period: str, hit: Callable[..., bool], specifier: str = "") -> MarketType:
    return MarketType(name, specifier, period, ("Yes", "No"), lambda *score: _hot(2, not hit(*score)))


def _ou(name: str, period: str, total: float, team: int | None = None) -> MarketType:
    def settle(h: int, a: int) -> Weights:
        return _two_way(h + a if team is None else (h, a)[team], total)

    return MarketType(name, f"total={total:g}", period, _OU, settle)


def _ah(name: str, period: str, hcp: float) -> MarketType:
    # The handicap is the home side's: "hcp=-1.5" means home must win by two.
    return MarketType(name, f"hcp={hcp:g}", period, ("1", "2"), lambda h, a: _two_way(h - a, -hcp))


def _eh(name: str, period: str, home: int, away: int) -> MarketType:
    settle = lambda h, a: _hot(3, _res(h + home, a + away))  # noqa: E731
    return MarketType(name, f"hcp={home}:{away}", period, _1X2, settle)


def _exact(name: str, period: str, top: int) -> MarketType:
    names = tuple(str(n) for n in range(top)) + (f"{top}+",)
    return MarketType(name, "", period, names, lambda h, a: _hot(top + 1, min(h + a, top)))


def _cs(name: str, period: str, top: int) -> MarketType:
    names = tuple(f"{h}:{a}" for h in range(top + 1) for a in range(top + 1)) + ("Other",)
    other = len(names) - 1
    settle = lambda h, a: _hot(other + 1, h * (top + 1) + a if max(h, a) <= top else other)  # noqa: E731
    return MarketType(name, "", period, names, settle)


def _combo(prefix: str, first: MarketType, second: MarketType) -> MarketType:
    # Both legs must win; only push-free legs are combined, so products of 0/1 shares suffice.
    names = tuple(f"{x} & {y}" for x in first.outcomes for y in second.outcomes)
    settle = lambda *s: tuple(x * y for x in first.settle(*s) for y in second.settle(*s))  # noqa: E731
    name = f"{prefix}{first.market} & {second.market}"
    return MarketType(name, first.specifier or second.specifier, first.period, names, settle)


def _lines(low: float, high: float, step: float) -> list[float]:
    # Multiples of a quarter are exact binary fractions, so these compare and format exactly.
    return [low + step * i for i in range(round((high - low) / step) + 1)]


def _halves() -> list[MarketType]:
    kinds = [
        MarketType(
            "Half Time/Full Time",
            "",
            _HALVES,
            tuple(f"{x}/{y}" for x in _1X2 for y in _1X2),
            lambda h1, a1, h2, a2: _hot(9, _res(h1, a1) * 3 + _res(h1 + h2, a1 + a2)),
        ),
        MarketType(
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


def _period(pre: str, p: str, goals: float, hcp: float) -> list[MarketType]:
    # The usual markets of a match or a half; `goals` and `hcp` are the outermost half lines offered.
    full = p == _FT
    both = _yn("Both Teams To Score", p, _both_score)
    kinds = [
        _m1x2(f"{pre}1X2", p),
        _dc(f"{pre}Double Chance", p),
        _yn(f"{pre}{both.market}", p, _both_score),
        MarketType(f"{pre}Draw No Bet", "", p, ("1", "2"), lambda h, a: _two_way(h - a, 0)),
        _cs(f"{pre}Correct Score", p, 3 if full else 2),
        _exact(f"{pre}Exact Goals", p, 6 if full else 3),
        MarketType(f"{pre}Odd/Even", "", p, ("Odd", "Even"), lambda h, a: _hot(2, (h + a) % 2 == 0)),
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
        kinds += [MarketType("Winning Margin", "", p, _MARGINS, lambda h, a: _hot(7, _margin(h, a)))]
    return kinds


def _asian(pre: str, p: str, goals: float, hcp: float) -> list[MarketType]:
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


def _build_catalogue() -> tuple[MarketType, ...]:
    kinds = _period("", _FT, 9.5, 5.5) + _halves() + _period("Half Time ", _1H, 3.5, 2.5)
    kinds += _period("2nd Half ", _2H, 3.5, 2.5) + _asian("", _FT, 9.5, 5.5)
    kinds += _asian("Half Time ", _1H, 3.5, 2.5) + _asian("2nd Half ", _2H, 3.5, 2.5)
    by_key: dict[tuple[str, str], MarketType] = {}
    for kind in kinds:
        by_key.setdefault((kind.market, kind.specifier), kind)
    head = [by_key[(market, specifier)] for market, _, specifier in (e.partition("|") for e in _HEAD)]
    return tuple(dict.fromkeys(head + list(by_key.values())))


CATALOGUE = _build_catalogue()
MAX_MARKETS = len(CATALOGUE)


def _scores(period: str) -> list[tuple[int, ...]]:
    size = _FT_GOALS if period == _FT else _HALF_GOALS
    grid: list[tuple[int, ...]] = [(h, a) for h in range(size) for a in range(size)]
    return [first + second for first in grid for second in grid] if period == _HALVES else grid


@cache
def _table(index: int) -> _Table:
    kind = CATALOGUE[index]
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


def true_probabilities(rng: random.Random, count: int) -> list[tuple[float, ...]]:
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
    if any(CATALOGUE[i].period == _HALVES for i in range(count)):
        cells[_HALVES] = [x * y for x in cells[_1H] for y in cells[_2H]]
    return [_probabilities(_table(i), cells[CATALOGUE[i].period]) for i in range(count)]
