"""What a Redis error means for the pipeline: a condition that passes, or one a person must fix.

Producers and consumers act on the same conditions in their own way: a producer keeps entries in its buffer
while Redis cannot take them and raises what no wait will fix; a consumer retries everything, but tells a
passing outage from one that needs a person.
"""

from __future__ import annotations

from enum import StrEnum

import redis


class Condition(StrEnum):
    UNREACHABLE = "unreachable"  # connection lost or refused, timeout, loading, a busy script, cluster moving
    OUT_OF_MEMORY = "out_of_memory"  # over maxmemory, and the policy evicts nothing that could help
    READ_ONLY = "read_only"  # a replica answered: a failover demoted the server written to
    NOT_PERSISTING = "not_persisting"  # MISCONF: a failed snapshot makes Redis refuse writes
    REFUSED = "refused"  # credentials, permissions, a key of the wrong type: no wait will help


# Replies that mean "not now": the server is loading, running a long script, or its cluster is moving.
_PASSING_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


def condition(exc: redis.RedisError) -> Condition:
    # redis-py makes a refused password or a denied AUTH a ConnectionError: test those first.
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return Condition.REFUSED
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return Condition.UNREACHABLE
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return Condition.OUT_OF_MEMORY
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return Condition.READ_ONLY
    text = str(exc)
    if text.startswith("MISCONF"):
        return Condition.NOT_PERSISTING
    if text.startswith(_PASSING_REPLIES) or isinstance(exc, redis.exceptions.ClusterDownError):
        return Condition.UNREACHABLE
    return Condition.REFUSED


def describe(exc: redis.RedisError) -> str:
    return f"redis: {type(exc).__name__}: {exc}"
