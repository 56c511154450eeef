"""A real Prometheus scraping a running consumer and the simulator: the series, the alert rules evaluated on
them, and every query of the Grafana dashboard.

One short run serves the whole module: a consumer and a simulator process serve metrics, Prometheus scrapes
them every second, the simulator publishes one cycle and a poison entry goes in beside it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from consumer.memory_watch import MemoryWatch
from consumer.metrics import OUTCOMES, ConsumerMetrics
from consumer.stream import ShardStreams
from producer.metrics import registry_for
from producer.publisher import Publisher
from shared.db import psycopg_url
from shared.keys import Keys
from shared.settings import Settings
from tests.prometheus import CONSUMER_JOB, PRODUCER_JOB, Prometheus, distinct_free_ports
from tests.support import counters, dead_letters, env_for, wait_until_drained
from tests.test_alerts import rules

DASHBOARD = (
    Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards" / "odds-pipeline.json"
)
EVENTS, BOOKMAKERS = 6, ("sportybet", "bet9ja")
# Grafana fills $__rate_interval in; here a window holding many one-second scrapes of the run.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


@dataclass(frozen=True)
class ScrapedRun:
    prometheus: Prometheus
    settings: Settings
    client: redis.Redis
    started_s: float
    published: int


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start(args: list[str], settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args, "--log-json"],
        env=env_for(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def scraped_run(
    prometheus_binary: str, redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScrapedRun]:
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE market_versions, market_series, snapshots, feeds, events, bookmakers RESTART IDENTITY"
        )
    settings = Settings(
        redis_url=redis_url,
        database_url=database_url,
        stream=f"test:prom:{int(time.time() * 1000)}",
        shards=2,
        lease_ttl_ms=3000,
        db_deadline_s=2.0,
        trim_interval_s=0.2,
    )
    client = redis.Redis.from_url(redis_url)
    keys = settings.keys
    prometheus_port, consumer_port, simulator_port = distinct_free_ports(3)
    targets = {CONSUMER_JOB: [f"127.0.0.1:{consumer_port}"], PRODUCER_JOB: [f"127.0.0.1:{simulator_port}"]}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        workdir = tmp_path_factory.mktemp("prometheus")
        with Prometheus(prometheus_binary, workdir, targets, port=prometheus_port) as prometheus:
            started_s = time.time()
            processes.append(
                start(["consumer", "run", "--name", "prom-1", "--metrics-port", str(consumer_port)], settings)
            )
            # Scraped at zero before anything happens, so increase() sees the dead letter arrive.
            prometheus.wait_for(f'odds_consumer_entries_processed_total{{job="{CONSUMER_JOB}"}} == 0')
            # One cycle, then the simulator idles until stopped, still serving its metrics.
            simulate = ["producer", "simulate", "--events", str(EVENTS), "--bookmakers", ",".join(BOOKMAKERS)]
            simulate += ["--markets", "4", "--seed", "3", "--cycles", "0", "--interval-s", "3600"]
            processes.append(start([*simulate, "--metrics-port", str(simulator_port)], settings))
            client.xadd(
                keys.shard(0), {"v": "1", "event": "sr:1", "bookmaker": "x", "ts": "nope", "data": b""}
            )
            published = EVENTS * len(BOOKMAKERS)
            while counters(client, keys).get("read", 0) < published + 1:
                assert all(p.poll() is None for p in processes), "a process exited"
                time.sleep(0.1)
            wait_until_drained(client, keys)
            # Prometheus has scraped the drained state: every entry read, every owned shard's backlog 0.
            prometheus.wait_for(f"odds_consumer_entries_read_total == {published + 1}")
            prometheus.wait_for(
                f"count(odds_consumer_backlog_entries == 0) == {settings.shards}"
                f" and on() odds_producer_published_total == {published}"
            )
            # And scraped each target a few times, so rate() and increase() have samples to compare.
            for name in ("odds_consumer_shards", "odds_producer_published_total"):
                prometheus.wait_for(f"count_over_time({name}[1m]) >= 3")
            yield ScrapedRun(prometheus, settings, client, started_s, published)
    finally:
        for process in processes:
            stop(process)
        leftovers = [k for p in settings.keys.patterns for k in client.scan_iter(match=p, count=1000)]
        if leftovers:
            client.delete(*leftovers)


def test_backlog_commit_and_dead_letter_series_have_their_labels_and_values(scraped_run: ScrapedRun) -> None:
    run = scraped_run
    prometheus, shards = run.prometheus, run.settings.shards
    keys = Keys(run.settings.stream, run.settings.group, shards)
    stats = counters(run.client, keys)
    consumer = ("instance", prometheus.query("odds_consumer_shards")[0]["metric"]["instance"])
    job = ("job", CONSUMER_JOB)
    # Then the backlog and pending series are per shard, with job and instance, and drained to 0
    for name in ("odds_consumer_backlog_entries", "odds_consumer_pending_entries"):
        assert prometheus.values(name) == {
            tuple(sorted([consumer, job, ("shard", str(n))])): 0 for n in range(shards)
        }
    # And the consumer owns every configured shard
    assert prometheus.values("odds_consumer_owned_shards") == {(consumer, job): shards}
    assert prometheus.values("odds_consumer_shards") == {(consumer, job): shards}
    # And each outcome counter is what the batches recorded in Redis, with the one dead letter among them
    for outcome in OUTCOMES:
        series = prometheus.values(f'odds_consumer_entries_processed_total{{outcome="{outcome}"}}')
        assert series == {(consumer, job, ("outcome", outcome)): stats.get(outcome, 0)}
    assert stats["dead_lettered"] == len(dead_letters(run.client, keys)) == 1
    assert stats["changed"] == run.published
    assert prometheus.values("odds_consumer_entries_read_total") == {(consumer, job): run.published + 1}
    # And the commits are there: the last one during this run, each batch's commit time observed
    (last_commit,) = prometheus.values("odds_consumer_last_commit_timestamp_seconds").values()
    assert run.started_s <= last_commit <= time.time()
    (batches,) = prometheus.values("odds_consumer_batch_commit_seconds_count").values()
    assert batches >= 1
    # And the simulator's endpoint reports what reached Redis
    (published,) = prometheus.values(f'odds_producer_published_total{{job="{PRODUCER_JOB}"}}').values()
    assert published == stats["published"] == run.published


def test_alert_rules_evaluate_on_the_real_series_and_only_the_dead_letter_fires(
    scraped_run: ScrapedRun,
) -> None:
    prometheus = scraped_run.prometheus
    # Given the rule file loaded by the real Prometheus, once every rule has been evaluated on this run
    expected = {rule["alert"] for rule in rules()}
    while True:
        loaded = prometheus.alert_rules()
        if {r["name"] for r in loaded} == expected and all(
            r["lastEvaluation"] > "1970" and r["health"] != "unknown" for r in loaded
        ):
            break
        time.sleep(0.2)
    # Then no rule failed to evaluate
    assert [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"] == []
    # And the dead letter fires its alert, while nothing else fires on a healthy pipeline
    while "OddsDeadLetters" not in prometheus.firing():
        time.sleep(0.2)
    assert prometheus.firing() == {"OddsDeadLetters"}


def exported_names() -> set[str]:
    """Every sample name the consumer and the producer serve, read from their own registries."""
    keys = Keys("names", "group", 1)
    client = redis.Redis()  # never connects: building the registries sends no command
    watch = MemoryWatch(client, ShardStreams(client, keys, "names"))
    registries = [ConsumerMetrics(client, keys, watch).registry, registry_for(Publisher(client, keys))]
    names = set()
    for family in (family for registry in registries for family in registry.collect()):
        # A labelled gauge has no sample before its first set, so the names come from the family's type.
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are neither functions, keywords,
    label names in matchers or grouping clauses, nor durations."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    tokens = re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", bare)
    return {m.group(1) for m in tokens if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS}


def dashboard_queries() -> list[tuple[str, str]]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def test_metric_names_are_read_from_promql() -> None:
    expr = 'sum by (le, shard) (rate(odds_a_bucket{outcome=~"x|y"}[5m])) / on (job) max(odds_b) > bool 0.5'
    assert metric_names(expr) == {"odds_a_bucket", "odds_b"}


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[p for p, _ in dashboard_queries()])
def test_dashboard_query_runs_on_the_real_prometheus(scraped_run: ScrapedRun, panel: str, expr: str) -> None:
    # Given a panel's query with Grafana's variables filled in
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"{panel} uses a variable the test does not know"
    # Then it selects only metrics the project exports
    names = metric_names(expr)
    assert names, f"{panel} selects no metric"
    assert names <= exported_names(), f"{panel} names metrics the project does not export"
    # And the real Prometheus runs it without an error and finds series for it
    assert scraped_run.prometheus.query(expr), f"{panel}: {expr} found nothing"
