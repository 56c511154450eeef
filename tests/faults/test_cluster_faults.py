"""Redis Cluster faults: a master SIGKILLed while producers publish and consumers consume, its replica
promoted by the cluster.

Replication is asynchronous: a write the master acknowledged but had not yet sent to its replica is gone
with it. So the snapshots accepted before the kill may be lost (they are counted, and the row's name says
how many); every snapshot accepted after it must be stored, and nothing may be duplicated or stored out of
order, whatever the lost acknowledgements and lease writes did. With the producer waiting for a replica
(ODDS_PRODUCER_WAIT_REPLICAS=1), no snapshot it counted as published may be lost at all, even when the
replica was cut off for a whole second before the master died.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from tests.faults.harness import FAULT_SETTINGS, FaultRun, RunConfig
from tests.faults.test_server_faults import finish_against_survivors

pytestmark = pytest.mark.faults

CLUSTER = RunConfig(consumers=2, cluster=True, settings=FAULT_SETTINGS.with_(shards=16))


def victim_shard(run: FaultRun) -> str:
    """A shard whose master is not the node REDIS_URL names, so that a restarted process still connects."""
    assert run.cluster is not None
    return next(s for s in run.keys.all_shards() if run.cluster.master_of(s).port != run.cluster.ports[0])


# Without the wait the case measures a loss: make faults runs it, make test only the one that loses nothing.
@pytest.mark.parametrize(
    "wait_replicas", [pytest.param(0, id="no-wait", marks=pytest.mark.slow), pytest.param(1, id="wait-1")]
)
def test_sigkill_of_a_master_cut_off_from_its_replica(tmp_path: Path, wait_replicas: int) -> None:
    settings = CLUSTER.settings.with_(producer_wait_replicas=wait_replicas, producer_wait_timeout_ms=200)
    config = dataclasses.replace(CLUSTER, settings=settings)
    with FaultRun("Redis Cluster: lagging replica", tmp_path, config) as run:
        assert run.cluster is not None
        run.start_consumers()
        with run.publishing():
            time.sleep(3.0)
            # The consumers are frozen meanwhile, as when they fall behind: what the master takes in that
            # second is still unread when it dies, so a lost write is a lost snapshot.
            with run.fault("SIGKILL a master cut off from its replica for 1 s, consumers behind"):
                consumers = run.live_consumers()
                for consumer in consumers:
                    consumer.freeze()
                dead, promoted_s = run.cluster.kill_master_of(victim_shard(run), replica_behind_s=1.0)
                for consumer in consumers:
                    consumer.thaw()
            candidates = len(run.accepted)
            time.sleep(2.0)
            # The dead node comes back as the promoted one's replica, as an operator would bring it back:
            # until then that master has no replica, and a producer waiting for one holds its entries.
            run.cluster.rejoin(dead)
            time.sleep(1.0)
        producer = "waiting for 1 replica" if wait_replicas else "not waiting for replicas"
        row, lost = finish_against_survivors(
            run,
            candidates,
            f"Redis Cluster: SIGKILL of a master cut off from its replica for 1 s, consumers behind, "
            f"producer {producer}, replica promoted after {promoted_s:.1f} s, dead node rejoined; "
            "published snapshots lost: {lost}",
        )
    assert row.passed, row.details()
    if wait_replicas:
        assert lost == [], f"{len(lost)} snapshots counted as published were lost"


def test_sigkill_of_a_master_while_publishing_and_consuming(tmp_path: Path) -> None:
    with FaultRun("Redis Cluster: SIGKILL of a master", tmp_path, CLUSTER) as run:
        assert run.cluster is not None
        run.start_consumers()
        with run.publishing():
            time.sleep(3.0)
            with run.fault("SIGKILL the master of a shard"):
                _, promoted_s = run.cluster.kill_master_of(victim_shard(run))
            # Counted once a replica serves the slot: a snapshot accepted later is on a live master.
            candidates = len(run.accepted)
            time.sleep(3.0)
        row, lost = finish_against_survivors(
            run,
            candidates,
            f"Redis Cluster (3 masters, 1 replica each): SIGKILL of a master while publishing, replica "
            f"promoted after {promoted_s:.1f} s; published snapshots lost: {{lost}}",
        )
    assert row.passed, row.details()
