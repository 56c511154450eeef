"""The scraper simulator: reproducible, realistic snapshots whose change rate is what the spec asks."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pytest

import producer.simulator as simulator
from producer.simulator import MAX_MARKETS, MIN_ODDS, ODDS_CAP, SimulationSpec, Simulator
from shared.wire import Market, Snapshot, encode, parse_envelope
from shared.wire_data import decode_data

TS = 1_795_000_000_000
BOOKMAKERS = ("sportybet", "bet9ja", "betking")


def content(snapshots: list[Snapshot]) -> dict[tuple[str, str], tuple[Market, ...]]:
    return {(s.event, s.bookmaker): s.markets for s in snapshots}


def run(spec: SimulationSpec, cycles: int) -> list[list[Snapshot]]:
    sim = Simulator(spec)
    return [sim.cycle(TS + n * 1000) for n in range(cycles)]


def changed_fraction(before: list[Snapshot], after: list[Snapshot]) -> float:
    old = content(before)
    return sum(old[(s.event, s.bookmaker)] != s.markets for s in after) / len(after)


def test_same_seed_and_calls_give_identical_snapshots() -> None:
    # Given two simulators built from the same spec
    spec = SimulationSpec(events=20, markets=30, change_rate=0.5, seed=7)
    # When both run the same sequence of cycles
    first, second = run(spec, 5), run(spec, 5)
    # Then every cycle is identical in content and order
    assert first == second


def test_different_seeds_give_different_events_and_odds() -> None:
    # Given two specs that differ only in the seed
    one = run(SimulationSpec(events=10, seed=1), 1)[0]
    two = run(SimulationSpec(events=10, seed=2), 1)[0]
    # Then the event ids differ, and so do the opening odds
    assert {s.event for s in one}.isdisjoint({s.event for s in two})
    assert [s.markets for s in one] != [s.markets for s in two]


def test_a_cycle_has_one_snapshot_per_event_and_bookmaker_in_order() -> None:
    # Given 25 events priced by three bookmakers
    spec = SimulationSpec(events=25, bookmakers=BOOKMAKERS)
    # When a cycle is generated
    snapshots = Simulator(spec).cycle(TS)
    # Then there is one snapshot per (event, bookmaker), event by event, all stamped with the given time
    assert len(snapshots) == spec.events * len(spec.bookmakers)
    assert len(content(snapshots)) == len(snapshots)
    assert [s.bookmaker for s in snapshots] == list(BOOKMAKERS) * spec.events
    assert len({s.event for s in snapshots}) == spec.events
    assert {s.captured_at_ms for s in snapshots} == {TS}


def test_event_ids_and_slugs_are_valid_and_every_snapshot_survives_the_wire() -> None:
    # Given a cycle of snapshots
    snapshots = Simulator(SimulationSpec(events=30, markets=60)).cycle(TS)
    for s in snapshots:
        # Then event ids look like real external ids
        assert re.fullmatch(r"sr:match:4\d{7}", s.event)
        # And each snapshot encodes to an entry the consumer accepts, with all its markets
        fields = {k.encode(): v for k, v in encode(s).items()}
        decoded = decode_data(parse_envelope(fields, 1_048_576).data)
        assert len(decoded.markets) == 60


def test_change_rate_zero_never_changes_content() -> None:
    # Given a simulator whose books never move
    cycles = run(SimulationSpec(events=40, change_rate=0.0), 6)
    # When later cycles are compared with the first
    # Then their content is the same; only the capture time moves on
    for later in cycles[1:]:
        assert content(later) == content(cycles[0])
        assert later[0].captured_at_ms > cycles[0][0].captured_at_ms


def test_change_rate_one_changes_every_snapshot_every_cycle() -> None:
    # Given a simulator whose books all move in every cycle
    cycles = run(SimulationSpec(events=100, change_rate=1.0, seed=3), 8)
    # When each cycle is compared with the one before
    # Then every single snapshot differs from its previous content
    for before, after in zip(cycles, cycles[1:], strict=False):
        assert changed_fraction(before, after) == 1.0


def test_a_move_rounding_back_to_the_same_odds_still_ticks_a_price(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given line moves that leave every probability, hence every price, exactly where it was
    monkeypatch.setattr(simulator, "_drift", lambda probs, rng: probs)
    sim = Simulator(SimulationSpec(events=30, markets=5, change_rate=1.0))
    opening = sim.cycle(TS)
    # When the books move
    moved = sim.cycle(TS + 1000)
    # Then each snapshot still changed, by one cent on one price, and stays quotable
    old = content(opening)
    for s in moved:
        diffs = [
            abs(m.outcomes[name] - before.outcomes[name])
            for m, before in zip(s.markets, old[(s.event, s.bookmaker)], strict=True)
            for name in m.outcomes
            if m.outcomes[name] != before.outcomes[name]
        ]
        assert len(diffs) == 1 and diffs[0] == pytest.approx(0.01)
        assert all(MIN_ODDS <= o <= ODDS_CAP for m in s.markets for o in m.outcomes.values())


def test_observed_change_fraction_matches_change_rate_within_binomial_noise() -> None:
    # Given a change rate of 0.2 over many (event, bookmaker, cycle) trials
    rate, events, cycles = 0.2, 200, 21
    runs = run(SimulationSpec(events=events, markets=10, change_rate=rate, seed=5), cycles)
    # When the changed snapshots are counted between consecutive cycles
    trials = events * len(BOOKMAKERS) * (cycles - 1)
    changed = sum(changed_fraction(a, b) * len(b) for a, b in zip(runs, runs[1:], strict=False))
    # Then the observed fraction is within 4 binomial standard deviations (a 1 in 15,000 false alarm)
    sd = math.sqrt(rate * (1 - rate) / trials)
    assert abs(changed / trials - rate) <= 4 * sd


@pytest.mark.parametrize("markets", [1, 40, 200, MAX_MARKETS])
def test_each_snapshot_has_the_asked_number_of_distinct_markets(markets: int) -> None:
    # Given a spec asking for a number of markets
    sim = Simulator(SimulationSpec(events=5, markets=markets, change_rate=1.0))
    # When a few cycles are generated
    for n in range(3):
        for s in sim.cycle(TS + n):
            # Then every snapshot has exactly that many markets, no (market, specifier) pair twice
            assert isinstance(s.markets, tuple) and len(s.markets) == markets
            assert len({(m.market, m.specifier) for m in s.markets}) == markets
            assert all(isinstance(m, Market) and isinstance(m.outcomes, Mapping) for m in s.markets)
            assert all(len(m.outcomes) >= 2 for m in s.markets)


def test_catalogue_offers_at_least_200_markets() -> None:
    # Given the simulator's market catalogue
    # Then it is deep enough for the 200-market snapshots the benchmark may ask for
    assert MAX_MARKETS >= 200


def test_all_odds_are_finite_decimal_prices_of_at_least_1_01() -> None:
    # Given books that move every cycle, across the whole catalogue
    cycles = run(SimulationSpec(events=20, markets=MAX_MARKETS, change_rate=1.0, seed=9), 6)
    # Then every price is finite, quotable, and has at most two decimals
    for snapshots in cycles:
        for s in snapshots:
            for m in s.markets:
                for odds in m.outcomes.values():
                    assert math.isfinite(odds) and MIN_ODDS <= odds <= ODDS_CAP
                    assert round(odds, 2) == odds


def test_bookmakers_price_the_same_event_differently_with_a_margin() -> None:
    # Given the opening prices of three bookmakers
    snapshots = Simulator(SimulationSpec(events=20, markets=10)).cycle(TS)
    by_event: dict[str, list[Snapshot]] = {}
    for s in snapshots:
        by_event.setdefault(s.event, []).append(s)
    for books in by_event.values():
        # Then the bookmakers disagree on the 1X2 prices of each event
        assert len({tuple(b.markets[0].outcomes.values()) for b in books}) == len(BOOKMAKERS)
    # And their two-way markets carry an overround of a few percent, as real books do
    overrounds = [
        sum(1 / o for o in m.outcomes.values())
        for s in snapshots
        for m in s.markets
        if len(m.outcomes) == 2 and max(m.outcomes.values()) < 20
    ]
    assert 1.03 < sum(overrounds) / len(overrounds) < 1.10


def test_spec_is_exposed_read_only() -> None:
    # Given a simulator
    spec = SimulationSpec(events=2)
    sim = Simulator(spec)
    # Then its spec is the one it was built from, and cannot be replaced
    assert sim.spec is spec
    with pytest.raises(AttributeError):
        sim.spec = SimulationSpec()  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"events": 0},
        {"bookmakers": ()},
        {"bookmakers": ("sportybet", "sportybet")},
        {"bookmakers": ("Sporty Bet",)},
        {"markets": 0},
        {"markets": MAX_MARKETS + 1},
        {"change_rate": -0.1},
        {"change_rate": 1.5},
        {"change_rate": math.nan},
    ],
)
def test_spec_rejects_values_that_cannot_be_simulated(bad: dict[str, object]) -> None:
    # Given a spec with one impossible value
    # Then building it fails with a readable error
    with pytest.raises(ValueError):
        SimulationSpec(**bad)  # type: ignore[arg-type]
