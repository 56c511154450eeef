"""Consumer process faults: SIGKILL, SIGTERM, a frozen consumer, and crashes inside the commit order.

Each case publishes through the real producer into a private Redis, runs real consumer processes against a
private Postgres, injects its fault repeatedly while publishing, drains, and compares Postgres with the
history one in-order writer would store. The quick variants run in `make test`; `make faults` runs all.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.faults.crashing_consumer import POINTS
from tests.faults.harness import ConsumerProcess, FaultRun, Row, RunConfig, processed_once

pytestmark = pytest.mark.faults

QUICK_SLOW = [pytest.param(3, id="3x"), pytest.param(20, id="20x", marks=pytest.mark.slow)]
# Bounds for a stuck run only (a hang must fail, not block the suite); never a speed requirement.
WAIT_S = 60.0


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def pending_of(run: FaultRun, consumer: str) -> int:
    total = 0
    for n in range(run.keys.shards):
        try:
            summary = run.client.xpending(run.keys.shard(n), run.keys.group)
        except redis.ResponseError:  # NOGROUP: no consumer has created the group yet
            continue
        total += sum(
            int(c["pending"]) for c in summary.get("consumers") or [] if c["name"] == consumer.encode()
        )
    return total


def lease_holders(run: FaultRun) -> list[ConsumerProcess]:
    owners = {run.client.get(run.keys.lease(n)) for n in range(run.keys.shards)}
    return [p for p in run.live_consumers() if p.name.encode() in owners]


def total_pending(run: FaultRun) -> int:
    return sum(
        int(run.client.xpending(run.keys.shard(n), run.keys.group)["pending"]) for n in range(run.keys.shards)
    )


def assert_exact(row: Row) -> None:
    assert row.drained, row.details()
    assert (len(row.lost), len(row.duplicated), len(row.stale)) == (0, 0, 0), row.details()
    assert row.rows == row.changes, row.details()


@pytest.mark.parametrize("kills", QUICK_SLOW)
def test_sigkill_of_consumers_loses_and_duplicates_nothing(tmp_path: Path, kills: int) -> None:
    # Given three consumer processes sharing four shards while snapshots are published
    with FaultRun(f"SIGKILL a consumer {kills}x (3 consumers)", tmp_path, RunConfig(consumers=3)) as run:
        run.start_consumers()
        rng = random.Random(kills)
        killed_with_work = 0
        with run.publishing():
            # When a consumer is killed with SIGKILL, again and again, preferably one with work in hand;
            # half are restarted under their own name (crash-restart), half replaced by a new one
            for i in range(kills):
                time.sleep(rng.uniform(0.3, 1.2))
                # A consumer that holds a shard lease (with 3 consumers and 4 shards one may hold none),
                # frozen first at a moment it holds pending entries, so the kill lands mid-batch
                victim = rng.choice(lease_holders(run) or run.live_consumers())
                killed_with_work += freeze_with_work(run, victim, timeout_s=5.0)
                with run.fault(f"SIGKILL {victim.name}"):
                    victim.kill()
                # Recovery is timed from the kill, so it includes the restart or the lease expiry
                run.start_consumer(victim.name if i % 2 == 0 else f"r{i}")
            time.sleep(1.0)
        row = run.finish()
        pending_after = total_pending(run)
    # Then every change and sighting is stored once, and reclaim emptied every pending list
    assert_exact(row)
    assert pending_after == 0
    assert row.dead_lettered == 0, row.details()
    assert killed_with_work > 0, "no kill hit a consumer with pending entries: the case tested nothing"
    print(f"{killed_with_work} of {kills} kills hit a consumer holding pending entries")


@pytest.mark.parametrize("stops", QUICK_SLOW)
def test_sigterm_of_consumers_processes_every_entry_once(tmp_path: Path, stops: int) -> None:
    # Given two consumer processes while snapshots are published
    with FaultRun(f"SIGTERM a consumer {stops}x (2 consumers)", tmp_path, RunConfig(consumers=2)) as run:
        run.start_consumers()
        rng = random.Random(stops)
        codes = []
        with run.publishing():
            # When a consumer gets SIGTERM again and again, and a new one takes its place
            for i in range(stops):
                time.sleep(rng.uniform(0.3, 1.0))
                victim = rng.choice(run.live_consumers())
                with run.fault(f"SIGTERM {victim.name}"):
                    codes.append(victim.terminate())
                run.start_consumer(f"r{i}")
            time.sleep(1.0)
        row = run.finish()
        xadds = int(run.client.hget(run.keys.stats, "published") or 0)
    # Then each stop was clean, history is exact, and no entry was committed twice: the outcome counters
    # add up to the entries published, with no redelivery recognised as a duplicate
    assert codes == [0] * stops
    assert_exact(row)
    assert xadds == row.published, "an XADD was repeated, so duplicate counts would be legitimate"
    assert processed_once(row) == row.published, row.details()
    assert row.counters.get("duplicate", 0) == 0, row.details()
    assert row.counters.get("stale", 0) == 0, row.details()


@pytest.mark.parametrize(
    "freezes", [pytest.param(1, id="1x"), pytest.param(4, id="4x", marks=pytest.mark.slow)]
)
def test_consumer_frozen_past_its_lease_changes_nothing_when_it_wakes(tmp_path: Path, freezes: int) -> None:
    config = RunConfig(consumers=2)
    with FaultRun(f"SIGSTOP a consumer past its lease {freezes}x", tmp_path, config) as run:
        zombie, survivor = run.start_consumers()
        with run.publishing():
            for _ in range(freezes):
                # Given the zombie frozen with SIGSTOP while it holds entries it has not acknowledged
                # (recovery is timed from the freeze: it is the survivor's takeover)
                with run.fault(f"SIGSTOP {zombie.name}"):
                    assert freeze_with_work(run, zombie), "the zombie never held pending entries"
                # When it stays frozen longer than its lease TTL (its lease expires and the survivor
                # reclaims its entries), then resumes
                time.sleep(config.settings.lease_ttl_ms / 1000 * 2 + 1.0)
                zombie.thaw()
                time.sleep(2.0)
        row = run.finish()
    # Then its late writes changed nothing: the history is exact, and the survivor did reclaim
    assert_exact(row)
    assert '"entries_reclaimed"' in survivor.log_text(), "the survivor never reclaimed the zombie's entries"


def freeze_with_work(run: FaultRun, process: ConsumerProcess, timeout_s: float = WAIT_S) -> bool:
    """SIGSTOP the process at a moment it holds pending entries (misses are thawed at once).

    False, with the process running, when it held none within timeout_s (it may own no shard).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process.freeze()
        if pending_of(run, process.name) > 0:
            return True
        process.thaw()
        time.sleep(0.005)
    return False


def crash_loop(run: FaultRun, point: str, crashes: int) -> list[int]:
    """Run c0 under the crashing wrapper until it died `crashes` times; its pending count at each death."""
    env = {"FAULT_CRASH_POINT": point, "FAULT_CRASH_AFTER_BATCHES": "2"}
    left_pending = []
    for i in range(crashes):
        with run.fault(f"{point} crash {i}"):
            victim: ConsumerProcess = run.start_consumer(
                "c0", module="tests.faults.crashing_consumer", env=env
            )
            victim.popen.wait(timeout=WAIT_S)
            assert victim.popen.returncode == -9, f"c0 exited with {victim.popen.returncode}, not by SIGKILL"
            left_pending.append(pending_of(run, "c0"))
    return left_pending


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize(
    "crashes", [pytest.param(3, id="3x"), pytest.param(10, id="10x", marks=pytest.mark.slow)]
)
def test_crash_inside_the_commit_order_loses_and_duplicates_nothing(
    tmp_path: Path, point: str, crashes: int
) -> None:
    # Given a normal consumer c1, and a consumer c0 that SIGKILLs itself at one point of its commit order
    with FaultRun(f"crash {point.replace('_', ' ')} {crashes}x", tmp_path, RunConfig(consumers=2)) as run:
        run.start_consumer("c1")
        with run.publishing():
            # When c0 dies there on its second batch, is restarted under its own name (re-reading its own
            # pending entries first) and dies again; after the last crash nobody restarts it
            left_pending = crash_loop(run, point, crashes)
            time.sleep(1.0)
        # Then c1 reclaims what the last crash left, and Postgres holds every change once
        row = run.finish()
    assert all(n > 0 for n in left_pending), f"a crash left nothing pending: {left_pending}"
    assert_exact(row)
    assert row.dead_lettered == 0, row.details()
