"""A fault run: private servers, consumer processes, a recording publisher, and the lost/duplicate checker.

API (kept stable; tests/faults/test_*.py import it):

    with FaultRun("SIGKILL a consumer 3x", tmp_path, RunConfig(consumers=2)) as run:
        run.start_consumers()                     # RunConfig.consumers processes named c0, c1, ...
        with run.publishing():                    # a background thread publishes a cycle every
            ...                                   #   cycle_interval_s until the block ends
            with run.fault("SIGKILL c0"):         # the fault's window; recovery is timed from its end
                run.consumer("c0").kill()
                run.start_consumer("c0")
        row = run.finish()                        # flush, drain, stop consumers, compare, record the row
    assert row.passed, row.details()

- run.redis / run.postgres: the private RedisServer / PostgresServer (kill, restart, pause, resume ...).
  Their ports survive restarts, so run.settings stays valid.
- run.settings (Settings), run.keys (Keys), run.client (a fail-fast redis client straight to the server),
  run.db() (an autocommit psycopg connection to the run's database), run.workdir (server and consumer logs).
- run.proxy() -> a started TcpProxy in front of Redis; pass run.proxied_url(proxy) as redis_url.
- run.start_consumer(name=None, redis_url=None, module="consumer", env=None, wait=True) -> ConsumerProcess
  (kill / terminate / freeze / thaw / alive / wait_started / log_text / log_path); wait=True returns once
  it logged consumer_started. run.consumer(name) is the newest process of that name.
- run.publish_cycles(n) publishes n cycles synchronously; run.publishing(redis_url=None) in a thread;
  run.publish_snapshots(snapshots) publishes snapshots a test built itself.
  Only snapshots Redis accepted are recorded (run.accepted); finish() flushes the producer's buffer first.
- run.fault(name) records a FaultRecord; recovery = time from the fault's end until every entry that was in
  the stream at that moment is acknowledged (an upper bound, marked "<=", when only the final drain told).
- run.wait_drained(timeout_s): nothing undelivered, nothing pending, on every shard.
- run.finish() -> Row: published, changes, rows, lost, duplicated, stale, dead letters by reason, counters
  (the stats hash), recoveries, passed. Every Row is appended to RESULTS, which tests/faults/conftest.py
  prints at the end of the session and writes to .faults-report.md.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import psycopg
import redis

from consumer.localservers import PostgresServer, RedisServer
from consumer.migrate import create_database_if_missing, upgrade
from consumer.status import collect
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.counters import read_totals
from shared.db import psycopg_url
from shared.redis_client import Client, connect
from shared.settings import Settings
from shared.stream_ids import stream_id
from shared.wire import Snapshot
from tests.faultkit.cluster import LocalCluster
from tests.faultkit.proxy import TcpProxy
from tests.faults import alerting
from tests.faults.processes import ConsumerProcess
from tests.faults.report import RESULTS, FaultRecord, Row, processed_once
from tests.history import compare, count_snapshot_rows, expected_history, stored_history
from tests.support import backlog, dead_letters, env_for

REPO = Path(__file__).resolve().parents[2]
TS0 = 1_795_000_000_000  # capture time of the first cycle; each cycle is CYCLE_MS later
CYCLE_MS = 1000
Conn = psycopg.Connection[tuple[object, ...]]
RawEntry = tuple[bytes, dict[bytes, bytes]]


# The settings of every process a run starts; the servers' URLs are filled in once they run. Small
# batches, a short database deadline and frequent trims make each case show its effect within seconds.
FAULT_SETTINGS = Settings(shards=4, batch_size=50, db_deadline_s=1.5, trim_interval_s=0.5)


@dataclass(frozen=True)
class RunConfig:
    consumers: int = 2
    settings: Settings = FAULT_SETTINGS
    appendfsync: str | None = "always"
    redis_config: dict[str, str] = field(default_factory=dict)  # more redis-server options (maxmemory)
    spec: SimulationSpec = field(
        default_factory=lambda: SimulationSpec(
            events=20, bookmakers=("sportybet", "bet9ja", "betking"), markets=8, change_rate=0.3, seed=3
        )
    )
    cycle_interval_s: float = 0.1
    cluster: bool = False  # a local Redis Cluster of 3 masters with a replica each instead of one server


class FaultRun:
    def __init__(self, fault: str, workdir: Path, config: RunConfig | None = None) -> None:
        self.fault_name = fault
        self.workdir = Path(workdir)
        self.config = config or RunConfig()
        self._stack = contextlib.ExitStack()
        self.redis = RedisServer(
            self.workdir, appendfsync=self.config.appendfsync, config=self.config.redis_config
        )
        self.postgres = PostgresServer(self.workdir)
        self.cluster = LocalCluster(self.workdir, masters=3, replicas=1) if self.config.cluster else None
        self.settings = Settings()
        self.keys = self.config.settings.keys
        self.client: Client = redis.Redis()
        self.accepted: list[Snapshot] = []  # every snapshot Redis acknowledged, as the producer reports them
        self.generated = 0  # snapshots handed to the producer
        self.faults: list[FaultRecord] = []
        self.processes: list[ConsumerProcess] = []
        self._latest: dict[str, ConsumerProcess] = {}
        self._sim = Simulator(self.config.spec)
        self._cycle = 0
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.alerts: alerting.AlertWatch | None = None  # with ODDS_FAULTS_ALERTS=1 (see alerting.py)

    # -- set-up and tear-down -----------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._stack.enter_context(self.postgres)
            self._stack.enter_context(self.redis if self.cluster is None else self.cluster)
            database_url = self.postgres.url_for("odds")
            create_database_if_missing(database_url)
            upgrade(database_url)
            self.settings = self.config.settings.with_(redis_url=self.redis_url, database_url=database_url)
            self.keys = self.settings.keys
            self.client = connect(self.redis_url, 1.0)
            self._stack.callback(self.client.close)
            self._stack.callback(self._kill_consumers)
            self._monitor = threading.Thread(target=self._watch_recoveries, name="recovery", daemon=True)
            self._monitor.start()
            self._stack.callback(self._stop_monitor)
            if alerting.asked():
                self.alerts = self._stack.enter_context(alerting.AlertWatch(self.workdir))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    @property
    def redis_url(self) -> str:
        return self.redis.url if self.cluster is None else self.cluster.url

    def _kill_consumers(self) -> None:
        for p in self.processes:
            p.thaw()
            p.kill()

    def _stop_monitor(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)

    def db(self) -> Conn:
        return psycopg.connect(psycopg_url(self.settings.database_url), autocommit=True, connect_timeout=5)

    def proxy(self) -> TcpProxy:
        """A started proxy in front of Redis, closed with the run."""
        proxy = TcpProxy("127.0.0.1", self.redis.port)
        proxy.start()
        self._stack.callback(proxy.close)
        return proxy

    @staticmethod
    def proxied_url(proxy: TcpProxy) -> str:
        return f"redis://127.0.0.1:{proxy.port}/0"

    # -- consumers -----------------------------------------------------------------------------------

    def start_consumers(self, count: int | None = None) -> list[ConsumerProcess]:
        count = self.config.consumers if count is None else count
        return [self.start_consumer(f"c{i}") for i in range(count)]

    def start_consumer(
        self,
        name: str | None = None,
        *,
        redis_url: str | None = None,
        module: str = "consumer",
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ConsumerProcess:
        """Start `python -m <module> run --name NAME`; module may be a test wrapper around the daemon.

        With wait, return once it has started: a signal sent during interpreter start-up would only meet
        the default handler, which tests nothing of the daemon.
        """
        name = name or f"c{len(self.processes)}"
        environ = env_for(self.settings)
        environ.update(
            {
                "ODDS_MAX_DELIVERIES": str(self.settings.max_deliveries),
                "ODDS_REDIS_TIMEOUT_S": str(self.settings.redis_timeout_s),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if redis_url is not None:
            environ["REDIS_URL"] = redis_url
        environ.update(env or {})
        if self.alerts is not None:
            environ["ODDS_METRICS_PORT"] = str(self.alerts.consumer_port())
        log_path = self.workdir / f"consumer-{name}-{len(self.processes)}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, "run", "--name", name, "--log-json"],
                env=environ,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = ConsumerProcess(name, popen, log_path)
        self.processes.append(process)
        self._latest[name] = process
        if wait:
            process.wait_started()
        return process

    def consumer(self, name: str) -> ConsumerProcess:
        return self._latest[name]

    def live_consumers(self) -> list[ConsumerProcess]:
        return [p for p in self._latest.values() if p.alive()]

    # -- publishing ----------------------------------------------------------------------------------

    def _producer(self, redis_url: str | None) -> Publisher:
        if self._publisher is None:
            url = redis_url or self.settings.redis_url
            settings = self.settings.with_(redis_url=url)
            # The producer's delivery reports say exactly which snapshots Redis took.
            self._publisher = Publisher(
                connect(settings.redis_url, settings.redis_timeout_s),
                settings.keys,
                settings.producer_buffer,
                settings.stream_hard_cap if settings.producer_hard_cap else None,
                settings.producer_high_water,
                on_delivery=self.accepted.extend,
                wait_replicas=settings.producer_wait_replicas,
                wait_timeout_ms=settings.producer_wait_timeout_ms,
            )
            if self.alerts is not None:
                self.alerts.serve_producer(self._publisher)
        return self._publisher

    @property
    def dropped(self) -> int:
        """Snapshots the producer's full buffer gave up, by its own count."""
        return self._publisher.total_overflowed if self._publisher is not None else 0

    def next_cycle(self) -> list[Snapshot]:
        """The simulator's next cycle, counted as generated, for a test that publishes it by its own means."""
        snapshots = self._sim.cycle(TS0 + self._cycle * CYCLE_MS)
        self._cycle += 1
        self.generated += len(snapshots)
        return snapshots

    def publish_cycles(self, cycles: int = 1, redis_url: str | None = None) -> int:
        """Publish cycles synchronously; returns how many snapshots Redis accepted in these calls."""
        return sum(self._publish(self.next_cycle(), redis_url) for _ in range(cycles))

    def publish_snapshots(self, snapshots: list[Snapshot], redis_url: str | None = None) -> int:
        """Publish snapshots a test built itself, as one cycle; how many Redis accepted in this call."""
        self.generated += len(snapshots)
        return self._publish(snapshots, redis_url)

    def _publish(self, snapshots: list[Snapshot], redis_url: str | None) -> int:
        publisher = self._producer(redis_url)
        with self._lock:
            return publisher.publish_cycle(snapshots).published

    @contextlib.contextmanager
    def publishing(self, redis_url: str | None = None) -> Iterator[None]:
        """Publish a cycle every cycle_interval_s in a background thread while the block runs."""
        stop = threading.Event()
        failure: list[BaseException] = []

        def loop() -> None:
            try:
                while not stop.is_set():
                    self.publish_cycles(1, redis_url)
                    stop.wait(self.config.cycle_interval_s)
            except BaseException as exc:  # surfaced in the test's thread below
                failure.append(exc)

        thread = threading.Thread(target=loop, name="publisher", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=30)
        if failure:
            raise failure[0]

    def flush_publisher(self, timeout_s: float = 120.0) -> None:
        """Send what the producer still buffers (Redis may just be coming back)."""
        if self._publisher is None:
            return
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._publisher.flush()
                if not self._publisher.buffered:
                    return
            if time.monotonic() > deadline:
                left = self._publisher.buffered
                raise AssertionError(f"producer still buffers {left} snapshots after {timeout_s} s")
            time.sleep(0.05)

    # -- faults and recovery -------------------------------------------------------------------------

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[FaultRecord]:
        record = FaultRecord(name, time.monotonic())
        try:
            yield record
        finally:
            record.ended = time.monotonic()
            with contextlib.suppress(redis.RedisError):
                record.marks = self._marks()
            with self._lock:
                self.faults.append(record)

    def _marks(self, client: Client | None = None) -> dict[int, tuple[int, int]]:
        client = client or self.client
        marks = {}
        for n in range(self.keys.shards):
            last = cast(list[RawEntry], client.xrevrange(self.keys.shard(n), count=1))
            if last:
                marks[n] = stream_id(last[0][0])
        return marks

    def _recovered(self, client: Client, marks: dict[int, tuple[int, int]]) -> bool:
        """Every entry up to the marks is delivered to our group and acknowledged."""
        for n, mark in marks.items():
            stream = self.keys.shard(n)
            groups = [g for g in client.xinfo_groups(stream) if g["name"] == self.keys.group.encode()]
            if not groups or stream_id(groups[0]["last-delivered-id"]) < mark:
                return False
            if client.xpending_range(stream, self.keys.group, min="-", max=f"{mark[0]}-{mark[1]}", count=1):
                return False
        return True

    def _watch_recoveries(self) -> None:
        client = connect(self.redis_url, 1.0)  # its own connection: redis-py clients are not shared
        while not self._stop.wait(0.1):
            with self._lock:
                open_faults = [f for f in self.faults if f.recovered_s is None]
            for record in open_faults:
                try:
                    if record.marks is None:
                        record.marks = self._marks(client)
                    if self._recovered(client, record.marks):
                        record.recovered_s = time.monotonic() - record.ended
                except redis.RedisError:
                    break  # Redis is down or restarting: try again on the next tick
        client.close()

    # -- draining and checking -----------------------------------------------------------------------

    def backlog(self) -> int:
        return backlog(self.client, self.keys)

    def wait_drained(self, timeout_s: float = 120.0) -> tuple[bool, str]:
        """Wait until nothing is undelivered or pending; (drained, what was left if not)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if self.backlog() == 0:
                    return True, ""
            time.sleep(0.1)
        try:
            state = str(collect(self.client, self.keys).as_dict())
        except redis.RedisError as exc:
            state = f"redis unreachable: {exc}"
        return False, f"not drained within {timeout_s} s: {state}"

    def finish(self, drain_timeout_s: float = 120.0) -> Row:
        """Flush the producer, drain, stop the consumers, compare Postgres with the expectation, record."""
        self.flush_publisher()
        for p in self.live_consumers():
            p.thaw()
        drained, note = self.wait_drained(drain_timeout_s)
        drained_at = time.monotonic()
        if self.alerts is not None:
            self.alerts.record(self.fault_name)
        # Stop every consumer before comparing, so a zombie's late write cannot land after the check.
        for p in self.processes:
            if p.alive():
                p.terminate()
        with self._lock:
            for record in self.faults:
                if record.recovered_s is None and drained:
                    record.recovered_s, record.upper_bound = drained_at - record.ended, True
        row = self.check(drained, note)
        RESULTS.append(row)
        return row

    def check(self, drained: bool = True, note: str = "") -> Row:
        expected = expected_history(self.accepted)
        with self.db() as conn:
            report = compare(expected, stored_history(conn))
            rows = count_snapshot_rows(conn)
        reasons: Counter[str] = Counter()
        for _, fields in dead_letters(self.client, self.keys):
            reasons[fields.get(b"dead_reason", b"?").decode(errors="replace")[:120]] += 1
        counters = read_totals(self.client, self.keys)
        counters.pop("last_commit_ms", None)
        return Row(
            fault=self.fault_name,
            published=len(self.accepted),
            changes=sum(len(runs) for runs in expected.values()),
            rows=rows,
            lost=report.lost,
            duplicated=report.duplicated,
            stale=report.stale,
            dead_letters=dict(reasons),
            counters=counters,
            faults=list(self.faults),
            drained=drained,
            drain_note=note,
            workdir=str(self.workdir),
        )


__all__ = [
    "CYCLE_MS",
    "RESULTS",
    "TS0",
    "ConsumerProcess",
    "FaultRecord",
    "FaultRun",
    "Row",
    "RunConfig",
    "processed_once",
]
