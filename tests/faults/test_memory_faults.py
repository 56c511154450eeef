"""Memory pressure: Redis at its maxmemory, as it is whenever consumers fall far enough behind.

Each case runs a private Redis with a small maxmemory and the noeviction policy. The producer must never
raise; consumers must drain a full Redis by themselves; and every snapshot the producer did not hand to
Redis must be one it counted as dropped: lost (generated minus accepted) equals dropped, exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import redis

from consumer.localservers import RedisServer
from producer.async_publisher import AsyncPublisher
from shared.memory import read_memory
from tests.faults.harness import FAULT_SETTINGS, FaultRun, Row, RunConfig
from tests.support import fail_fast_client

pytestmark = pytest.mark.faults

MAXMEMORY_MB = 5


def small_redis(**changes: object) -> RunConfig:
    """A private Redis of MAXMEMORY_MB under noeviction, and producers with small buffers."""
    config = {"maxmemory": f"{MAXMEMORY_MB}mb", "maxmemory-policy": "noeviction"}
    return RunConfig(redis_config=config, settings=FAULT_SETTINGS.with_(producer_buffer=3000, **changes))


def publish_until_dropping(
    run: FaultRun, peak: list[float], held: set[str | None], limit_s: float = 60.0
) -> float:
    """Publish cycles until the producer's full buffer has dropped some; returns how long that took.

    Records the memory share after each cycle, and why the producer held entries back.
    """
    started = time.monotonic()
    while not run.dropped:
        assert time.monotonic() - started < limit_s, "the producer never had to drop anything"
        run.publish_cycles(1)
        peak.append(read_memory(run.client).share or 0.0)
        held.add(run._publisher.core.held_back if run._publisher else None)
        time.sleep(run.config.cycle_interval_s)
    return time.monotonic() - started


def publish_for(run: FaultRun, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        run.publish_cycles(1)
        time.sleep(run.config.cycle_interval_s)


def check_lost_equals_dropped(run: FaultRun, row: Row) -> None:
    lost = run.generated - len(run.accepted)
    assert lost == run.dropped > 0, (run.generated, len(run.accepted), run.dropped)
    assert row.passed, row.details()
    assert row.dead_lettered == 0, row.details()


@pytest.mark.parametrize(
    "high_water",
    [pytest.param(0.8, id="high-water-0.8"), pytest.param(1.0, id="no-high-water")],
)
def test_redis_at_maxmemory_with_consumers_stopped_drains_by_itself(
    tmp_path: Path, high_water: float
) -> None:
    # Given a 5 MB Redis, two consumers and a producer with a buffer of 3,000 entries
    config = small_redis(producer_high_water=high_water)
    with FaultRun("Redis at maxmemory", tmp_path, config) as run:
        run.start_consumers()
        publish_for(run, 1.5)
        # When the consumers stop and the producer goes on until Redis is at its mark (or, without one,
        # refuses writes) and the buffer has had to drop entries
        peak: list[float] = []
        held: set[str | None] = set()
        with run.fault("consumers stopped until the producer dropped entries") as record:
            for p in run.live_consumers():
                p.terminate()
            filled_s = publish_until_dropping(run, peak, held)
            refused = "out_of_memory" in held
            # And the consumers start again, with no operator action
            run.start_consumers()
        publish_for(run, 2.0)
        row = run.finish()
    mark = f"high-water mark {high_water:.0%}" if high_water < 1 else "no high-water mark"
    row.fault = (
        f"Redis at maxmemory {MAXMEMORY_MB} MB, consumers stopped {filled_s:.0f} s, {mark} (peak "
        f"{max(peak):.0%} of maxmemory, {'writes refused' if refused else 'writes still taken'}; "
        f"{run.dropped} dropped = lost; drained {record.describe()} after restart)"
    )
    print(row.fault)
    # Then the pipeline drained by itself and lost exactly what the producer counted as dropped; with
    # the mark, the producer held back at it and Redis never refused a write; without it, Redis refused
    # writes and the consumers drained it all the same
    check_lost_equals_dropped(run, row)
    assert refused == (high_water >= 1), held
    assert ("high_water" in held) == (high_water < 1), held


def test_postgres_down_until_redis_fills_loses_only_what_the_producer_dropped(tmp_path: Path) -> None:
    # Given a 5 MB Redis, two consumers and a producer with a buffer of 3,000 entries
    with FaultRun("Postgres down until Redis fills", tmp_path, small_redis()) as run:
        run.start_consumers()
        publish_for(run, 1.5)
        # When Postgres is down long enough for the backlog to fill Redis and the producer's buffer
        peak: list[float] = []
        with run.fault("postgres down until the producer dropped entries") as record:
            run.postgres.stop()
            down_s = publish_until_dropping(run, peak, set())
            run.postgres.start()
        publish_for(run, 2.0)
        row = run.finish()
    row.fault = (
        f"Postgres down {down_s:.0f} s, Redis {MAXMEMORY_MB} MB filled to {max(peak):.0%} (the mark is "
        f"80%); {run.dropped} dropped = lost; drained {record.describe()} after restart"
    )
    print(row.fault)
    # Then the consumers waited with their batches, and drained once Postgres was back
    check_lost_equals_dropped(run, row)


def _switch_master(old: redis.Redis, new: redis.Redis, new_port: int) -> None:
    """A controlled failover with nothing but REPLICAOF: pause writes on the old master, let the replica
    catch up, promote it, and make the old master its replica, which then answers writes with READONLY."""
    old.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    target = int(old.info("replication")["master_repl_offset"])
    while int(new.info("replication")["master_repl_offset"]) < target:
        time.sleep(0.01)
    new.replicaof("NO", "ONE")
    old.replicaof("127.0.0.1", new_port)
    old.execute_command("CLIENT", "UNPAUSE")


def test_a_failover_that_demotes_the_master_the_producer_writes_to_loses_nothing(tmp_path: Path) -> None:
    # Given a replica of the run's Redis, two consumers, and a producer publishing to the master
    with FaultRun("failover to a read-only master", tmp_path) as run:
        replica = RedisServer(tmp_path / "replica", config={"replicaof": f"127.0.0.1 {run.redis.port}"})
        with replica:
            master, standby = run.client, fail_fast_client(replica.url, 1.0)
            run.start_consumers()
            held: list[str | None] = []
            publish_for(run, 1.5)
            # When a failover promotes the replica and demotes the master, which producer and consumers
            # keep using: it answers every write with READONLY for 2 s, until it is made master again
            with run.fault("master demoted to a read-only replica for 2 s"):
                _switch_master(master, standby, replica.port)
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    run.publish_cycles(1)
                    held.append(run._publisher.core.held_back if run._publisher else None)
                    time.sleep(run.config.cycle_interval_s)
                _switch_master(standby, master, run.redis.port)
            publish_for(run, 2.0)
            row = run.finish()
    row.fault = (
        f"failover: the producer's master read-only for 2 s (entries held back as read_only in "
        f"{held.count('read_only')} of {len(held)} cycles; {run.dropped} dropped)"
    )
    print(row.fault)
    # Then the producer held its entries back as read_only, never raised, and nothing was lost
    assert "read_only" in held
    assert run.generated == len(run.accepted) and run.dropped == 0
    assert row.passed, row.details()


def test_an_asyncio_scraper_never_stalls_its_loop_while_redis_is_black_holed(tmp_path: Path) -> None:
    # Given an asyncio scraper publishing through a proxy, and two consumers reaching Redis directly
    with FaultRun("asyncio scraper, Redis black-holed", tmp_path) as run:
        run.start_consumers()
        proxy = run.proxy()
        stalls: dict[str, float] = {}

        async def scrape() -> None:
            client = redis.asyncio.Redis.from_url(
                run.proxied_url(proxy), socket_timeout=1.0, socket_connect_timeout=1.0
            )
            publisher = AsyncPublisher(client, run.keys, on_delivery=run.accepted.extend)
            worst = {"now": 0.0}

            async def ticker() -> None:
                while True:
                    before = time.monotonic()
                    await asyncio.sleep(0.005)
                    worst["now"] = max(worst["now"], time.monotonic() - before - 0.005)

            tick = asyncio.create_task(ticker())

            async def cycles(seconds: float, phase: str) -> None:
                worst["now"] = 0.0
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    await publisher.publish_cycle(run.next_cycle())
                    await asyncio.sleep(run.config.cycle_interval_s)
                stalls[phase] = worst["now"]

            await cycles(1.5, "before")
            # When the proxy swallows every byte for 4 s, then heals
            with run.fault("redis black-holed 4 s for the scraper"):
                proxy.blackhole()
                await cycles(4.0, "during")
                proxy.heal()
            await cycles(1.5, "after")
            assert await publisher.flush(timeout_s=60)
            tick.cancel()
            await publisher.aclose()

        thread = threading.Thread(target=lambda: asyncio.run(scrape()), name="scraper")
        thread.start()
        thread.join(timeout=120)
        row = run.finish()
    ms = {phase: f"{s * 1000:.0f} ms" for phase, s in stalls.items()}
    row.fault = (
        f"asyncio scraper, Redis black-holed 4 s (longest event loop stall {ms.get('during')} during, "
        f"{ms.get('before')} before, {ms.get('after')} after)"
    )
    print(row.fault)
    # Then every snapshot reached Redis once it healed and is stored once; the stall is reported only
    assert run.generated == len(run.accepted) and run.dropped == 0
    assert row.passed, row.details()
