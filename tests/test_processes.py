"""Consumer processes: one of two killed mid-run, a graceful stop on SIGTERM; the simulator's stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psycopg
import redis

from consumer.status import collect
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys
from shared.settings import Settings
from shared.wire import Market, Snapshot
from tests.history import compare, count_snapshot_rows, expected_history, stored_history
from tests.support import backlog, env_for, start_consumer, wait_until_drained

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]


def test_sigkill_of_one_of_two_consumers_keeps_history_exact(
    settings: Settings, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given two consumer processes sharing four shards, in small batches so the kill lands mid-stream
    settings = settings.with_(shards=4, batch_size=20)
    keys = settings.keys
    publisher = Publisher.from_settings(settings)
    sim = Simulator(
        SimulationSpec(
            events=40, bookmakers=("sportybet", "bet9ja", "betking"), markets=10, change_rate=0.3, seed=11
        )
    )
    victim, survivor = start_consumer(settings, "victim"), start_consumer(settings, "survivor")
    published = []
    try:
        # When cycles are published and the victim is killed with SIGKILL while it has work in hand
        for c in range(12):
            snapshots = sim.cycle(TS + c * 1000)
            published += snapshots
            publisher.publish_cycle(snapshots)
            if c == 6:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
            time.sleep(0.05)
        # Then the survivor takes over its shards once the lease expires and drains everything
        wait_until_drained(client, keys, timeout_s=90)
    finally:
        for p in (victim, survivor):
            p.kill()
            p.wait()
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert count_snapshot_rows(db) == sum(len(r) for r in expected_history(published).values())
    assert sum(client.xpending(keys.shard(n), keys.group)["pending"] for n in range(keys.shards)) == 0


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(
    settings: Settings, db: Conn, client: redis.Redis, keys: Keys
) -> None:
    # Given a consumer working through a backlog
    publisher = Publisher.from_settings(settings.with_(batch_size=10))
    sim = Simulator(
        SimulationSpec(events=50, bookmakers=("sportybet", "bet9ja"), markets=10, change_rate=1.0)
    )
    for c in range(10):
        publisher.publish_cycle(sim.cycle(TS + c * 1000))
    total = backlog(client, keys)
    proc = start_consumer(settings.with_(batch_size=10), "graceful")
    try:
        while backlog(client, keys) == total:
            time.sleep(0.01)
        # When it gets SIGTERM mid-backlog
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
    # Then it exits 0, leaves nothing pending, gives its leases back, and left work for others
    assert code == 0
    pending = sum(client.xpending(keys.shard(n), keys.group)["pending"] for n in range(keys.shards))
    assert pending == 0
    assert not any(client.exists(keys.lease(n)) for n in range(keys.shards))
    assert 0 < backlog(client, keys) < total


def test_a_second_signal_exits_at_once_leaving_the_batch_pending(
    settings: Settings, client: redis.Redis, keys: Keys
) -> None:
    # Given a consumer whose batch hangs on a database that accepts connections and never answers
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        hanging = settings.with_(
            database_url=f"postgresql://postgres@127.0.0.1:{port}/odds",
            lease_ttl_ms=120_000,
            db_deadline_s=60,
        )
        Publisher.from_settings(hanging).publish(
            Snapshot("sr:match:1", "bet9ja", TS, (Market("1X2", "", {"1": 2.0, "X": 3.0, "2": 4.0}),))
        )
        proc = start_consumer(hanging, "stubborn")
        try:
            while backlog(client, keys) and not _pending(client, keys):
                time.sleep(0.01)
            # When it gets SIGTERM, which waits for the batch in hand, and then a second SIGTERM
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            still_running = proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
    # Then the first signal did not end it, the second did, at once, and the entry waits for a reclaim
    assert still_running
    assert code == 128 + signal.SIGTERM
    assert _pending(client, keys) == 1


def _pending(client: redis.Redis, keys: Keys) -> int:
    return sum(c.pending for c in collect(client, keys).consumers)


def test_simulator_stops_on_sigterm_while_it_waits_for_its_next_cycle(
    settings: Settings, client: redis.Redis, keys: Keys
) -> None:
    # Given a simulator that published its first cycle and waits an hour for the next one
    simulate = ["simulate", "--events", "2", "--bookmakers", "sportybet", "--markets", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", *simulate, "--interval-s", "3600", "--log-json"],
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while int(client.hget(keys.stats, "published") or 0) < 2:
            assert proc.poll() is None, "the simulator exited"
            time.sleep(0.05)
        # When it is sent SIGTERM
        proc.send_signal(signal.SIGTERM)
        # Then it exits 0 (within the wait's bound, far below the hour it was waiting)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
