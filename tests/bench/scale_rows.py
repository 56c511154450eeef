"""The bench's scale rows: 1, 2 and 4 consumer processes at 20 % change, on one Redis server and on a
local Redis Cluster of 3 masters with a replica each (all on this machine's cores, beside Postgres).

The same throughput measure as the other rows (a paused backlog, timed from the consumers' release until
every entry is committed and acknowledged), with 16 shards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.bench import measures
from tests.bench.harness import Bench, Size, bench
from tests.faultkit.cluster import LocalCluster

CONSUMERS = (1, 2, 4)
RATE = 0.2


SHARDS = 16  # the default: what a deployment that grows to 16 consumer processes runs


def rates(b: Bench) -> dict[int, float]:
    b.shards = SHARDS
    # Consumers started together race for 16 shards and rebalance every quarter of the TTL: a shorter
    # one than the bench's other rows use spreads them in seconds, still longer than a backlog's publish.
    b.lease_ttl_ms = 20_000
    return {n: measures.throughput(b, RATE, n, with_yardstick=False).per_s for n in CONSUMERS}


def scale_rows(single: Bench, database_url: str, size: Size) -> list[tuple[str, str, str]]:
    """(measure, result, alongside) rows: the single server's and the cluster's rates side by side."""
    on_server = rates(single)
    with tempfile.TemporaryDirectory(prefix="odds-bench-cluster-") as workdir:
        with LocalCluster(Path(workdir), masters=3, replicas=1) as cluster:
            with bench(cluster.url, database_url, size, name="cluster") as b:
                on_cluster = rates(b)
    return [
        (
            f"Scale: {n} consumer process{'es' if n > 1 else ''}, {RATE:.0%} change, {SHARDS} shards",
            f"{on_server[n]:,.0f}/s one Redis server",
            f"{on_cluster[n]:,.0f}/s on a Redis Cluster of 3 masters + 3 replicas on the same 2 cores "
            f"({on_cluster[n] / on_server[n]:.2f}x)",
        )
        for n in CONSUMERS
    ]
