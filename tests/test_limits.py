"""Snapshots of absurd shape are dead-lettered with their reason before they cost memory, and the rest of
their batch is stored. (How long rejecting them takes is a figure: `python -m tests.bench.limits`.)"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator

import msgpack
import psycopg
import pytest
import redis

from consumer.daemon import Daemon
from producer.publisher import Publisher
from shared.settings import Settings
from shared.wire import DataLimits, InvalidEntry, Market, Snapshot, canonical_markets
from shared.wire_data import decode_data
from tests.absurd import SHAPES
from tests.history import count_snapshot_rows
from tests.support import dead_letters, drain

TS = 1_795_000_000_000
REASONS = {
    "100,000 markets": "data has a list of 100,000 items, over 10,000 markets (ODDS_MAX_MARKETS)",
    "10,000 outcomes in one market": "data has a map of 10,000 entries, over 1,000 outcomes in a market",
    "a 1 MB market name": "data has a string of 1,000,000 bytes, over 512 (a name has at most 128",
    "1 MB of nested empty lists": "data holds more than 20,002 maps and lists",
}


def peak_bytes_while(work: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        work()
    except InvalidEntry:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_absurd_snapshot_is_refused_with_its_reason_before_it_is_built(shape: str) -> None:
    # Given a payload of absurd shape
    data = SHAPES[shape]()
    # When it is decoded, then it is refused with a reason naming the limit
    with pytest.raises(InvalidEntry) as refused:
        decode_data(data)
    assert str(refused.value).startswith(REASONS[shape])
    # And refusing it took less than a tenth of the memory that decoding it without limits takes
    unlimited = peak_bytes_while(lambda: msgpack.unpackb(data, strict_map_key=False))
    assert peak_bytes_while(lambda: decode_data(data)) < unlimited / 10


def test_the_limits_are_the_settings() -> None:
    # Given a consumer allowed one market of at most three outcomes
    daemon = Daemon(Settings(max_markets=1, max_outcomes=3))
    limits = daemon.processor._limits.data
    four_way = Market("Winner", "", {"A": 2.5, "B": 3.1, "C": 2.9, "D": 9.0})
    # Then a four-way market is refused with those limits, and so are two markets, but not with the defaults
    assert limits == DataLimits(max_markets=1, max_outcomes=3)
    with pytest.raises(InvalidEntry, match="over 3 outcomes in a market"):
        decode_data(canonical_markets([four_way]), limits)
    with pytest.raises(InvalidEntry, match="over 1 markets"):
        decode_data(canonical_markets([four_way, Market("1X2", "", {"1": 2.0})]), limits)
    assert decode_data(canonical_markets([four_way])).markets[0].outcomes == ("A", "B", "C", "D")


@pytest.fixture
def roomy(settings: Settings) -> Iterator[Settings]:
    # Entries up to 8 MB, so that the shape limits, not the size limit, meet the 100,000 markets
    yield settings.with_(max_entry_bytes=8 * 1024 * 1024)


def test_absurd_snapshots_are_dead_lettered_and_the_rest_of_the_batch_is_stored(
    roomy: Settings, db: psycopg.Connection[tuple[object, ...]], client: redis.Redis
) -> None:
    # Given good snapshots with the absurd ones between them, all in one shard
    settings = roomy.with_(shards=1)
    keys = settings.keys
    publisher = Publisher.from_settings(settings)
    good = [
        Snapshot(f"sr:match:{i}", "bet9ja", TS, (Market("1X2", "", {"1": 2.0 + i, "X": 3.0, "2": 4.0}),))
        for i in range(len(SHAPES) + 1)
    ]
    sources = {}
    for i, (shape, build) in enumerate(sorted(SHAPES.items())):
        publisher.publish(good[i])
        fields = {"v": "1", "event": f"absurd:{i}", "bookmaker": "bet9ja", "ts": str(TS), "data": build()}
        sources[client.xadd(keys.shard(0), fields)] = shape  # type: ignore[arg-type]
    publisher.publish(good[-1])
    # When a consumer drains the shard
    daemon = Daemon(settings)
    drain(daemon)
    daemon.writer.discard()
    # Then each absurd one is dead-lettered with its reason, and every good one is stored
    letters = {f[b"dead_source_id"]: f[b"dead_reason"].decode() for _, f in dead_letters(client, keys)}
    assert {sources[k]: v[: len(REASONS[sources[k]])] for k, v in letters.items()} == {
        shape: REASONS[shape] for shape in SHAPES
    }
    assert count_snapshot_rows(db) == len(good)
