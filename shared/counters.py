"""The pipeline's counters as totals.

They are kept per shard, where a consumer's bookkeeping adds them in the step that acknowledges what they
count (on a Redis Cluster that step can touch one shard's slot only), and in one hash for what no shard owns:
entries published, entries lost to trimming, memory estimates. A total is the sum of them all; a field
ending in _ms is a time, and its total is the latest.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.keys import Keys
from shared.redis_client import Client

TIME_SUFFIX = "_ms"


def add_counters(into: dict[str, int], counters: Mapping[bytes, bytes]) -> dict[str, int]:
    for raw, value in counters.items():
        name, n = raw.decode(errors="replace"), int(value)
        into[name] = max(into.get(name, n), n) if name.endswith(TIME_SUFFIX) else into.get(name, 0) + n
    return into


def read_totals(client: Client, keys: Keys) -> dict[str, int]:
    """Every counter, summed over the shards and the hash of counters no shard owns: one round trip per
    server."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.stats)
    for n in range(keys.shards):
        pipe.hgetall(keys.shard_stats(n))
    totals: dict[str, int] = {}
    for reply in pipe.execute():
        add_counters(totals, reply)
    return totals
