"""Redis Cluster faults: a master SIGKILLed while producers publish and consumers consume, its replica
promoted by the cluster.

Replication is asynchronous: a write the master acknowledged but had not yet sent to its replica is gone
with it. So the snapshots accepted before the kill may be lost (they are counted, and the row's name says
how many); every snapshot accepted after it must be stored, and nothing may be duplicated or stored out of
order, whatever the lost acknowledgements and lease writes did.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import FAULT_SETTINGS, FaultRun, RunConfig
from tests.faults.test_server_faults import finish_against_survivors

pytestmark = pytest.mark.faults

CLUSTER = RunConfig(consumers=2, cluster=True, settings=FAULT_SETTINGS.with_(shards=16))


def test_sigkill_of_a_master_while_publishing_and_consuming(tmp_path: Path) -> None:
    with FaultRun("Redis Cluster: SIGKILL of a master", tmp_path, CLUSTER) as run:
        assert run.cluster is not None
        run.start_consumers()
        with run.publishing():
            time.sleep(3.0)
            # A master other than the node REDIS_URL names, so that a restarted process can still connect.
            victim = next(
                s for s in run.keys.all_shards() if run.cluster.master_of(s).port != run.cluster.ports[0]
            )
            with run.fault("SIGKILL the master of a shard"):
                _, promoted_s = run.cluster.kill_master_of(victim)
            # Counted once a replica serves the slot: a snapshot accepted later is on a live master.
            candidates = len(run.accepted)
            time.sleep(3.0)
        row, lost = finish_against_survivors(
            run,
            candidates,
            f"Redis Cluster (3 masters, 1 replica each): SIGKILL of a master while publishing, replica "
            f"promoted after {promoted_s:.1f} s; acknowledged XADDs lost: {{lost}}",
        )
    assert row.passed, row.details()
