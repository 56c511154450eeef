"""A feed's encoding carried from snapshot to snapshot equals encoding each snapshot afresh."""

from __future__ import annotations

import random

from producer.encoding import FeedEncoding
from shared.wire import Market, canonical_markets

NAMES = ("1X2", "Over/Under", "BTTS", "Correct Score", "Handicap", "Double Chance")


def market(rng: random.Random, name: str, specifier: str) -> Market:
    outcomes = rng.choice((("1", "X", "2"), ("Over", "Under"), ("Yes", "No"), ("1:0", "0:0", "0:1", "2:1")))
    return Market(name, specifier, {o: round(rng.uniform(1.01, 40.0), 2) for o in outcomes})


def test_carried_encoding_equals_a_fresh_one_through_every_kind_of_change() -> None:
    # Given a feed of 40 markets in scraper order (not canonical), some keys repeated
    rng = random.Random(5)
    keys = [(rng.choice(NAMES), f"line={rng.randint(0, 30)}") for _ in range(40)]
    markets = tuple(market(rng, *key) for key in keys)
    encoding = FeedEncoding.of(markets)
    spliced = 0
    for _ in range(3000):
        # When the next snapshot moves a few odds, renames outcomes, changes a key, reorders, adds or
        # drops a market, or passes the very same markets again
        kind = rng.choice(("odds", "odds", "odds", "outcomes", "key", "shuffle", "count", "same", "retuple"))
        current = list(markets)
        if kind in ("odds", "outcomes"):
            for i in rng.sample(range(len(current)), rng.randint(1, 5)):
                old = current[i]
                if kind == "odds":
                    first = next(iter(old.outcomes))
                    current[i] = Market(old.market, old.specifier, {**old.outcomes, first: rng.uniform(1, 9)})
                else:
                    current[i] = market(rng, old.market, old.specifier)
        elif kind == "key":
            i = rng.randrange(len(current))
            current[i] = market(rng, rng.choice(NAMES), f"line={rng.randint(0, 30)}")
        elif kind == "shuffle":
            rng.shuffle(current)
        elif kind == "count":
            if len(current) > 1 and rng.random() < 0.5:
                current.pop(rng.randrange(len(current)))
            else:
                current.append(market(rng, rng.choice(NAMES), f"line={rng.randint(0, 30)}"))
        previous = encoding
        markets = previous.markets if kind == "same" else tuple(current)
        encoding = previous.next(markets)
        spliced += encoding is not previous and encoding.ranks is previous.ranks
        # Then its data is exactly what encoding the snapshot from scratch gives
        assert encoding.data == canonical_markets(markets), kind
    # And most small changes were spliced, not encoded again
    assert spliced > 1000
