"""Helpers shared by the integration and fault tests: drive a daemon, run consumer processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import redis

from consumer.daemon import Daemon
from consumer.dlq import DeadLetters
from consumer.plan import Entry, Poison
from consumer.status import collect
from consumer.stream import Outcome, ShardStreams
from shared.counters import read_totals
from shared.keys import Keys
from shared.redis_client import Client, connect
from shared.settings import Settings

OPEN_CLIENTS: list[Client] = []


def fail_fast_client(url: str, timeout_s: float = 0.5) -> Client:
    """The project's own client (no hidden retries), so a test sees the first failure; closed after it."""
    client = connect(url, timeout_s)
    OPEN_CLIENTS.append(client)
    return client


def fill(client: redis.Redis, stream: str, n: int) -> list[bytes]:
    """n small entries added to stream; their ids."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"i": i})
    return list(pipe.execute())


def read(
    client: redis.Redis, keys: Keys, consumer: str, stream: str, count: int, start: str = ">"
) -> list[bytes]:
    """XREADGROUP for consumer in the test group; the ids delivered."""
    reply = client.xreadgroup(keys.group, consumer, {stream: start}, count=count)
    return [entry_id for _, entries in reply for entry_id, _ in entries]


def connection_flags(settings: Settings) -> list[str]:
    """The command-line flags that point a CLI command at these settings' Redis and keys."""
    return [
        "--redis-url",
        settings.redis_url,
        "--stream",
        settings.stream,
        "--shards",
        str(settings.shards),
        "--group",
        settings.group,
    ]


def dead_letter(
    client: redis.Redis,
    keys: Keys,
    fields: dict[bytes, bytes] | None,
    reason: str,
    source_id: bytes | None = None,
    deliveries: int = 1,
) -> str:
    """Dead-letter an entry the way the consumer does, and return the dead letter's id.

    The bookkeeping script writes a dead letter only together with the acknowledgement of its entry,
    so the entry is really added and read first; afterwards it is deleted, as the trim would.
    """
    streams = ShardStreams(client, keys, "c1")
    streams.ensure_groups()
    stream = keys.shard(0)
    added = client.xadd(stream, fields or {b"v": b""}, id=source_id or "*")
    client.xreadgroup(keys.group, "c1", {stream: ">"})
    entry = Entry(stream, added, fields, deliveries)
    outcome = Outcome(dead=[Poison(entry, reason)])
    outcome.ack([entry])
    streams.finish(outcome)
    client.xdel(stream, added)
    return f"0/{client.xrevrange(keys.dead(0), count=1)[0][0].decode()}"


def dead_letters(client: Client, keys: Keys) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every shard's dead letters as (id in its shard's stream, fields), oldest first."""
    return [(letter.entry_id.encode(), letter.fields) for letter in DeadLetters(client, keys).scan()]


def counters(client: Client, keys: Keys) -> dict[str, int]:
    """The pipeline's counters, summed over the shards."""
    return read_totals(client, keys)


def fingerprints(client: Client, keys: Keys) -> dict[bytes, bytes]:
    """Every shard's fingerprints, feed -> stored value."""
    found: dict[bytes, bytes] = {}
    for hash_key in keys.all_fingerprints():
        found.update(client.hgetall(hash_key))  # type: ignore[arg-type]
    return found


@contextlib.contextmanager
def stepped_daemon(settings: Settings) -> Iterator[Daemon]:
    """A daemon for a test to step in-process, its groups created; its database connection closed after."""
    daemon = Daemon(settings)
    daemon.streams.ensure_groups()
    try:
        yield daemon
    finally:
        daemon.writer.discard()


def backlog(client: redis.Redis, keys: Keys) -> int:
    """Entries our group has not acknowledged; a shard whose group does not exist yet counts whole."""
    total = 0
    for shard in collect(client, keys).shards:
        mine = [g.backlog for g in shard.groups if g.name == keys.group]
        total += mine[0] if mine else shard.length
    return total


def drain(daemon: Daemon, max_steps: int = 2000) -> None:
    """Step an in-process daemon until every shard is read and nothing is left unacknowledged."""
    client = daemon.client
    for _ in range(max_steps):
        worked = daemon.step()
        if (
            not worked
            and daemon.states.live == set(range(daemon.keys.shards))
            and backlog(client, daemon.keys) == 0
        ):
            return
    raise AssertionError(f"not drained after {max_steps} steps: {collect(client, daemon.keys).as_dict()}")


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODDS_")}
    env.update(
        {
            "REDIS_URL": settings.redis_url,
            "DATABASE_URL": settings.database_url,
            "ODDS_STREAM": settings.stream,
            "ODDS_SHARDS": str(settings.shards),
            "ODDS_GROUP": settings.group,
            "ODDS_LEASE_TTL_MS": str(settings.lease_ttl_ms),
            "ODDS_DB_DEADLINE_S": str(settings.db_deadline_s),
            "ODDS_BATCH_SIZE": str(settings.batch_size),
            "ODDS_TRIM_INTERVAL_S": str(settings.trim_interval_s),
        }
    )
    return env


def start_consumer(settings: Settings, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--name", name, "--log-json"],
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_drained(client: redis.Redis, keys: Keys, timeout_s: float = 60.0) -> None:
    """Wait for consumer processes to leave no backlog (a bound for a stuck run, not a speed check)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if backlog(client, keys) == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"backlog not drained within {timeout_s} s: {collect(client, keys).as_dict()}")
