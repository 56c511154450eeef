"""A shard given up for a newcomer is handed over without a gap: finished first, never claimed from us."""

from __future__ import annotations

import psycopg
import redis

from consumer.daemon import Daemon
from consumer.shards import State
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.settings import Settings
from tests.history import compare, expected_history, stored_history
from tests.support import backlog

TS = 1_795_000_000_000


def test_a_consumer_joining_gets_its_shards_with_nothing_left_for_it_to_claim(
    settings: Settings, client: redis.Redis, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    # Given consumer a holding both shards, live, with a batch read ahead while a backlog drains
    settings = settings.with_(batch_size=6)
    sim = Simulator(SimulationSpec(events=10, bookmakers=("sportybet", "bet9ja"), markets=2, change_rate=1.0))
    published = [s for c in range(6) for s in sim.cycle(TS + c * 1000)]
    Publisher.from_settings(settings).publish_cycle(published)
    a = Daemon(settings.with_(consumer="a"))
    for _ in range(50):
        a.step()
        if a.prefetched is not None and a.states.live == {0, 1}:
            break
    assert a.prefetched is not None and a.states.live == {0, 1}
    # When consumer b joins, and a rebalances at once
    b = Daemon(settings.with_(consumer="b"))
    claimed: list[int] = []
    claim = b.streams.claim_pending

    def counting_claim(n: int) -> tuple[int, list[bytes]]:
        result = claim(n)
        claimed.append(result[0])
        return result

    b.streams.claim_pending = counting_claim  # type: ignore[method-assign]
    b.leases.rebalance(force=True)
    a.leases.rebalance(force=True)  # a sees b among the members now
    a._maintain_leases(force=True)
    given = a.states.releasing
    assert len(given) == 1 and a.states.state(next(iter(given))) is State.RELEASING
    a.step()
    # Then a applied its read-ahead batch and gave the shard back
    assert a.states.held == {0, 1} - given
    assert client.get(settings.keys.lease(next(iter(given)))) is None
    # And b took it with nothing pending under a's name there to claim, and the two drained everything
    for _ in range(400):
        worked = a.step() | b.step()
        if not worked and backlog(client, settings.keys) == 0 and b.states.live == given:
            break
    assert b.states.held == given and sum(claimed) == 0
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    a.writer.discard()
    b.writer.discard()
