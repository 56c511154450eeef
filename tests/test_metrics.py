"""Prometheus metrics scraped over HTTP, and the DSN passwords kept out of the logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from consumer.daemon import Daemon
from consumer.errors import classify_db_error, classify_redis_error
from consumer.localservers import free_port
from consumer.memory_watch import MemoryWatch
from consumer.metrics import OUTCOMES, RETRY_LABELS, ConsumerMetrics
from consumer.status import collect
from consumer.stream import ShardStreams
from producer.metrics import serve
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys
from shared.redis_client import connect
from shared.settings import Settings
from tests.support import counters, dead_letters, drain, env_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def memory_watch(client: redis.Redis, keys: Keys) -> MemoryWatch:
    return MemoryWatch(client, ShardStreams(client, keys, "c1"))


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_until(port: int, name: str, at_least: float, proc: subprocess.Popen[bytes]) -> Samples:
    """Poll the endpoint until a counter reaches a value (the test timeout bounds a stuck daemon)."""
    while True:
        assert proc.poll() is None, "the consumer exited"
        try:
            samples = scrape(port)
        except OSError:
            samples = {}  # the server is not listening yet
        if value(samples, name) >= at_least:
            return samples
        time.sleep(0.1)


@pytest.fixture
def daemon_process(settings: Settings) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumer",
            "run",
            "--name",
            "metrics-test",
            "--log-json",
            "--metrics-port",
            str(port),
        ],
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc, port
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # do not leave it running; the timeout still fails the test
            raise


def test_daemon_serves_batch_outcomes_latency_and_backlog(
    settings: Settings, client: redis.Redis, keys: Keys, daemon_process: tuple[subprocess.Popen[bytes], int]
) -> None:
    # Given a consumer serving metrics, two published cycles of simulated feeds and one poison entry
    proc, port = daemon_process
    sim = Simulator(
        SimulationSpec(events=5, bookmakers=("sportybet", "bet9ja"), markets=4, change_rate=0.5, seed=3)
    )
    publisher = Publisher.from_settings(settings)
    now_ms = int(time.time() * 1000)
    published = sum(publisher.publish_cycle(sim.cycle(now_ms + c)).published for c in range(2))
    client.xadd(keys.shard(0), {"v": "7", "event": "sr:1", "bookmaker": "x", "ts": "1", "data": b""})
    total = published + 1
    # When the consumer has read them all
    samples = scrape_until(port, "odds_consumer_entries_read_total", total, proc)
    # Then each outcome counter equals what the batches recorded in Redis
    stats = counters(client, keys)
    assert value(samples, "odds_consumer_entries_read_total") == stats["read"] == total
    for outcome in OUTCOMES:
        counted = value(samples, "odds_consumer_entries_processed_total", outcome=outcome)
        assert counted == stats.get(outcome, 0)
    assert stats["dead_lettered"] == len(dead_letters(client, keys)) == 1
    # And the histograms saw every batch, and every entry with a valid capture time (the poison entry's
    # ts is no capture time, and an age computed from a ts of any length could overflow)
    batches = value(samples, "odds_consumer_batch_entries_count")
    assert batches >= 1
    assert value(samples, "odds_consumer_batch_entries_sum") == total
    assert value(samples, "odds_consumer_batch_commit_seconds_count") == batches
    assert value(samples, "odds_consumer_capture_to_commit_seconds_count") == published
    # And the backlog gauges of the owned shards drain to what status computes
    while value(samples := scrape(port), "odds_consumer_owned_shards") < keys.shards or any(
        value(samples, "odds_consumer_backlog_entries", shard=str(n)) for n in range(keys.shards)
    ):
        time.sleep(0.2)
    assert collect(client, keys).backlog == 0


def test_gauges_follow_owned_shards_and_count_the_backlog(client: redis.Redis, keys: Keys) -> None:
    # Given a group with 5 entries on shard 0, two of them delivered and unacknowledged
    for stream in keys.all_shards():
        client.xgroup_create(stream, keys.group, id="0", mkstream=True)
    for i in range(5):
        client.xadd(keys.shard(0), {"i": i})
    client.xreadgroup(keys.group, "c1", {keys.shard(0): ">"}, count=2)
    watch = memory_watch(client, keys)
    metrics = ConsumerMetrics(client, keys, watch, refresh_s=0)
    # When Redis memory is sampled and the gauges are refreshed for shards 0 and 1
    watch.sample()
    metrics.refresh({0, 1})
    server = metrics.serve(free_port(), addr="127.0.0.1")
    port = server.server_address[1]
    try:
        samples = scrape(port)
        # Then backlog and pending match the status of each shard
        expected = collect(client, keys).shards
        for n in (0, 1):
            group = expected[n].groups[0]
            assert value(samples, "odds_consumer_backlog_entries", shard=str(n)) == group.backlog
            assert value(samples, "odds_consumer_pending_entries", shard=str(n)) == group.pending
        # And Redis memory is shown as sampled, with the stream of the shard that holds entries
        assert watch.last is not None
        assert value(samples, "odds_redis_used_memory_bytes") == watch.last.used_bytes > 0
        assert value(samples, "odds_redis_max_memory_bytes") == watch.last.max_bytes
        assert value(samples, "odds_redis_maxmemory_policy", policy=watch.last.policy) == 1
        assert value(samples, "odds_redis_stream_memory_bytes", shard="0") > 0
        # And the configured shard count is there for comparing with the shards owned
        assert value(samples, "odds_consumer_shards") == keys.shards
        # And every retry series is there at zero before any retry, so increase() sees the first one
        for cause, backend in RETRY_LABELS:
            assert ("odds_consumer_retries_total", (("backend", backend), ("cause", cause))) in samples
        # When shard 0 is no longer owned, then its series disappear
        metrics.refresh({1})
        samples = scrape(port)
        assert ("odds_consumer_backlog_entries", (("shard", "0"),)) not in samples
        assert value(samples, "odds_consumer_owned_shards") == 1
        # And the owned count follows at once, also between two refreshes of the backlog
        slow = ConsumerMetrics(client, keys, watch, refresh_s=3600)
        slow.refresh({0, 1})
        slow.refresh({1})
        assert slow.registry.get_sample_value("odds_consumer_owned_shards") == 1
        assert slow.registry.get_sample_value("odds_consumer_backlog_entries", {"shard": "0"}) is not None
    finally:
        server.shutdown()


def test_retries_are_labelled_by_cause_and_backend(client: redis.Redis, keys: Keys) -> None:
    # Given the errors the daemon retries: a lost Postgres connection and a Redis timeout
    metrics = ConsumerMetrics(client, keys, memory_watch(client, keys))
    try:
        raise classify_db_error(psycopg.OperationalError("server closed the connection"))
    except Exception as exc:
        postgres_error = exc
    redis_error = classify_redis_error(redis.TimeoutError("timed out"))  # not chained, as in the batch loop
    # When each is counted
    metrics.retried(postgres_error)
    metrics.retried(redis_error)
    metrics.retried(redis_error)
    # Then the counters are per backend
    get = metrics.registry.get_sample_value
    assert get("odds_consumer_retries_total", {"cause": "transient", "backend": "postgres"}) == 1
    assert get("odds_consumer_retries_total", {"cause": "transient", "backend": "redis"}) == 2


def test_entries_forced_out_by_the_hard_cap_are_counted(settings: Settings, client: redis.Redis) -> None:
    # Given one shard of 10 entries, a hard cap of 3, and a daemon reading one entry per batch
    settings = settings.with_(shards=1, stream_hard_cap=3, batch_size=1, trim_interval_s=0)
    keys = settings.keys
    snapshots = Simulator(
        SimulationSpec(events=10, bookmakers=("sportybet",), markets=1, change_rate=0.0, seed=2)
    ).cycle(int(time.time() * 1000))
    # (published under no cap: the producer enforces the cap too, and only the consumer's count is tested)
    assert (
        Publisher.from_settings(settings.with_(stream_hard_cap=100)).publish_cycle(snapshots).published == 10
    )
    daemon = Daemon(settings)
    # When it drains the shard, trimming after each batch
    drain(daemon)
    daemon.writer.discard()
    # Then entries were forced out, and the metric counts exactly what the stats hash counts
    forced = int(client.hget(keys.stats, "forced_trimmed") or 0)
    assert forced > 0
    assert daemon.metrics.registry.get_sample_value("odds_consumer_entries_forced_trimmed_total") == forced


def test_producer_serves_published_buffered_and_overflowed(settings: Settings, keys: Keys) -> None:
    # Given a publisher on the real Redis and one whose Redis is unreachable, with a buffer of 2
    snapshots = Simulator(
        SimulationSpec(events=3, bookmakers=("sportybet",), markets=2, change_rate=1.0, seed=1)
    ).cycle(int(time.time() * 1000))
    up = Publisher.from_settings(settings)
    down = Publisher(connect(f"redis://127.0.0.1:{free_port()}/0", 0.5), keys, buffer_limit=2)
    servers = [serve(p, free_port(), addr="127.0.0.1") for p in (up, down)]
    try:
        # When both publish the same cycle
        up_result, down_result = up.publish_cycle(snapshots), down.publish_cycle(snapshots)
        up_samples, down_samples = (scrape(s.server_address[1]) for s in servers)
        # Then each endpoint shows what its publisher reported
        assert value(up_samples, "odds_producer_published_total") == up_result.published == len(snapshots)
        assert value(down_samples, "odds_producer_published_total") == 0
        assert value(down_samples, "odds_producer_buffered_entries") == down_result.buffered == 2
        overflowed = value(down_samples, "odds_producer_overflowed_total")
        assert overflowed == down_result.overflowed == len(snapshots) - 2
        # And why it holds them, and what the full buffer gave up: only the oldest, as no feed repeats
        assert value(down_samples, "odds_producer_held_back", reason="unreachable") == 1
        assert value(down_samples, "odds_producer_dropped_total", reason="oldest") == overflowed
        assert value(down_samples, "odds_producer_dropped_total", reason="superseded") == 0
        assert not [k for k in up_samples if k[0] == "odds_producer_held_back"]
    finally:
        for server in servers:
            server.shutdown()


def test_producer_counts_entries_it_forced_out_by_the_hard_cap(
    settings: Settings, client: redis.Redis
) -> None:
    # Given a publisher on one shard with a hard cap of 2, and nobody consuming
    keys = Keys(settings.stream, settings.group, 1)
    publisher = Publisher(connect(settings.redis_url, 2.0), keys, hard_cap=2)
    snapshots = Simulator(
        SimulationSpec(events=5, bookmakers=("sportybet",), markets=1, change_rate=0.0, seed=4)
    ).cycle(int(time.time() * 1000))
    server = serve(publisher, free_port(), addr="127.0.0.1")
    try:
        # When it publishes 5 snapshots
        publisher.publish_cycle(snapshots)
        samples = scrape(server.server_address[1])
    finally:
        server.shutdown()
    # Then the 3 it deleted are counted on its endpoint, as in the stats hash
    forced = int(client.hget(keys.stats, "forced_trimmed") or 0)
    assert forced == len(snapshots) - 2
    assert value(samples, "odds_producer_entries_forced_trimmed_total") == forced


def test_startup_log_never_shows_dsn_passwords(settings: Settings) -> None:
    # Given Redis and Postgres URLs carrying passwords
    env = env_for(settings)
    env["REDIS_URL"] = "redis://default:redis-Secret-1@127.0.0.1:1/0"
    env["DATABASE_URL"] = "postgresql://postgres:pg-Secret-2@127.0.0.1:1/odds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--log-json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    # When the consumer starts, fails to reach Redis and says so (then it is killed: only its words matter)
    assert proc.stderr is not None
    lines = []
    for raw in proc.stderr:
        lines.append(raw.decode())
        if '"consumer_retrying"' in lines[-1]:
            break
    proc.kill()
    _, rest = proc.communicate()
    output = "".join(lines) + rest.decode()
    # Then the startup line names both servers with the user kept and the password hidden
    started = next(json.loads(line) for line in lines if '"consumer_started"' in line)
    assert started["redis"] == "redis://default:***@127.0.0.1:1/0"
    assert started["database"] == "postgresql://postgres:***@127.0.0.1:1/odds"
    # And no password appears anywhere in the output
    assert "redis-Secret-1" not in output and "pg-Secret-2" not in output
