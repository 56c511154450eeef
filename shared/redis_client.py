"""Redis connections with deliberate timeouts and no hidden retries, to one server or to a Redis Cluster.

redis-py retries failed commands by default, which turned a 1 s socket timeout into about 15 s before an
error surfaced. Each caller has its own retry policy (the consumer's backoff loop, the producer's buffer),
so the client itself must fail fast.

REDIS_URL names one server either way: whether it is a node of a Redis Cluster is asked once, on
connecting, and a cluster node gets a cluster client (which finds the other nodes itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from shared.redis_errors import ClusterUnsupported, cluster_enabled

T = TypeVar("T")

# One server or a cluster: every command the pipeline sends, each shard's scripts included, works on both.
Client = redis.Redis | RedisCluster


def client_options(timeout_s: float) -> dict[str, Any]:
    """What every Redis client of the pipeline is built with, sync or asyncio, server or cluster."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }


def connect(url: str, timeout_s: float) -> Client:
    """A client for the server REDIS_URL names: a cluster client when it is a node of a Redis Cluster.

    Redis may be down when a scraper or a consumer starts; then the server's client is returned, and
    first_contact() tells a cluster apart once it answers.
    """
    server = redis.Redis.from_url(url, health_check_interval=30, **client_options(timeout_s))
    try:
        clustered = is_cluster_node(server)
    except redis.RedisError:
        return server
    if not clustered:
        return server
    server.close()
    # The cluster client gets no retries either (it still follows MOVED): a failover shows up as errors,
    # which each caller retries with its backoff while the client finds the new topology.
    return RedisCluster.from_url(url, **client_options(timeout_s))


def is_cluster_node(server: redis.Redis) -> bool:
    try:
        return cluster_enabled(server.info("cluster"))
    except redis.ResponseError:
        # A user that may not run INFO, or a Redis-compatible server without it: CLUSTER INFO tells too,
        # and only a cluster node answers it.
        try:
            server.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        except redis.ResponseError:
            return False
        return True


LATE = "it was unreachable when this process connected; start the process again now that it answers"


def first_contact(client: Client) -> None:
    """Raise ClusterUnsupported when a server's client reaches a node of a Redis Cluster."""
    if isinstance(client, redis.Redis) and is_cluster_node(client):
        raise ClusterUnsupported(LATE)


def on_each_server(client: Client, call: Callable[[redis.Redis], T]) -> list[T]:
    """call() on each server that holds keys: the cluster's masters, or the one server.

    A cluster's masters are asked through clients of their own, which do not refresh the cluster's map of
    nodes as the cluster client's own commands do: when one cannot be reached (it may have just failed
    over), the map is read again before the error goes to the caller, who retries with its backoff.
    """
    if not isinstance(client, RedisCluster):
        return [call(client)]
    try:
        return [call(client.get_redis_connection(node)) for node in client.get_primaries()]  # type: ignore[no-untyped-call]
    except (redis.ConnectionError, redis.TimeoutError):
        refresh_topology(client)
        raise


def refresh_topology(client: RedisCluster) -> None:
    """Read the cluster's map of nodes again, after a master's own connection met a dead master or a moved
    slot; if no node answers now, the next attempt reads it again."""
    with contextlib.suppress(redis.RedisError):
        client.nodes_manager.initialize()
