"""Redis connections with deliberate timeouts and no hidden retries.

redis-py retries failed commands by default, which turned a 1 s socket timeout into about 15 s before an
error surfaced. Each caller has its own retry policy (the consumer's backoff loop, the producer's buffer),
so the client itself must fail fast.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.redis_errors import ClusterUnsupported, cluster_enabled


def connect(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=False,
    )


def ensure_standalone(client: redis.Redis) -> None:
    """Raise ClusterUnsupported when the server is a node of a Redis Cluster, before anything is written:
    otherwise some commands would work on that node and others fail with MOVED or CROSSSLOT."""
    if cluster_enabled(client.info("cluster")):
        raise ClusterUnsupported()
