"""Redis connections with deliberate timeouts and no hidden retries.

redis-py retries failed commands by default, which turned a 1 s socket timeout into about 15 s before an
error surfaced. Each caller has its own retry policy (the consumer's backoff loop, the producer's buffer),
so the client itself must fail fast.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        decode_responses=False,
    )
