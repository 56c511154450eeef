"""The bench's measurements, each against a fresh stream (and, where consumers run, a reset database)."""

from __future__ import annotations

import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from consumer.sweep import FingerprintSweep
from producer.core import PIPELINE_CHUNK
from producer.publisher import Publisher
from shared.keys import Keys, shard_of
from shared.stream_ids import stream_id
from shared.wire import Market, Snapshot, encode
from tests.bench.foreign import ForeignPublisher
from tests.bench.harness import BOOKMAKERS, GROUP, POLL_S, Bench, ms_now
from tests.bench.storage import Changes, count_changes, yardstick

PUBLISH_PAIRS = 5


@dataclass
class RunResult:
    rate: float
    consumers: int
    snapshots: int
    seconds: float
    stats: dict[str, int]
    snapshot_rows: int
    market_rows: int
    updated_rows: int
    hot_updates: int
    table_bytes: int
    changes: Changes
    first_cycle: list[Snapshot]  # the backlog's first cycle, for the bytes of writing it in full
    span_ms: tuple[int, int]  # the first and the last capture time
    yardstick_s: float = 0.0

    @property
    def per_s(self) -> float:
        return self.snapshots / self.seconds


def publish_rates(b: Bench) -> tuple[float, float, float]:
    """Publisher.publish_cycle (encode + pipelined XADD) against raw pipelined XADD of the same bytes.

    The publisher first sees every feed once (a scraper's steady state), untimed. Then each cycle is
    published and, right after, its bytes are XADDed raw, so each pair meets the same conditions on a
    shared machine. Returns the median publish rate, the median raw rate, and the median of the ratios.
    """
    sim = b.simulator(0.2)
    _, keys = b.new_stream("publish")
    publisher = Publisher(b.client, keys)
    publisher.publish_cycle(sim.cycle(b.next_ts()))
    published, raw = [], []
    for _ in range(PUBLISH_PAIRS):
        snapshots = sim.cycle(b.next_ts())
        start = time.perf_counter()
        publisher.publish_cycle(snapshots)
        published.append(len(snapshots) / (time.perf_counter() - start))
        entries = [(keys.shard(shard_of(s.event, s.bookmaker, keys.shards)), encode(s)) for s in snapshots]
        start = time.perf_counter()
        for i in range(0, len(entries), PIPELINE_CHUNK):
            pipe = b.client.pipeline(transaction=False)
            for stream, fields in entries[i : i + PIPELINE_CHUNK]:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.execute()
        raw.append(len(entries) / (time.perf_counter() - start))
    ratio = statistics.median(p / r for p, r in zip(published, raw, strict=True))
    return statistics.median(published), statistics.median(raw), ratio


def producer_under_stall(b: Bench) -> tuple[float, float]:
    """Median publish_cycle time with a consumer working, and with it stopped and Postgres locked."""
    b.reset_database()
    stream, keys = b.new_stream("stall")
    procs = b.start_consumers(stream, 1)
    b.wait_leases(keys, 1)
    sim = b.simulator(0.2)
    publisher = Publisher(b.client, keys)

    def cycle_s() -> float:
        snapshots = sim.cycle(b.next_ts())
        start = time.perf_counter()
        publisher.publish_cycle(snapshots)
        return time.perf_counter() - start

    normal = [cycle_s() for _ in range(3)]
    # Stopped with SIGTERM, not frozen with SIGSTOP: a consumer frozen inside COPY holds its locks until it
    # runs again (the server waits for the rest of the data), and the LOCK TABLE below would wait for ever.
    b.stop(procs)
    with psycopg.connect(b.db_url) as lock:
        lock.execute("LOCK TABLE feeds, snapshots, market_series, market_versions IN ACCESS EXCLUSIVE MODE")
        stalled = [cycle_s() for _ in range(3)]
        lock.rollback()
    return statistics.median(normal), statistics.median(stalled)


def throughput(
    b: Bench, rate: float, consumers: int, with_yardstick: bool = True, foreign: bool = False
) -> RunResult:
    """Drain a paused backlog; foreign: published in stable but non-canonical bytes, as another
    scraper might send them."""
    b.reset_database()
    stream, keys = b.new_stream(f"tp-{rate:g}-{consumers}")
    sim = b.simulator(rate)
    warm = sim.cycle(b.next_ts())
    backlog = [sim.cycle(b.next_ts()) for _ in range(b.size.backlog_cycles)]
    expected = count_changes(warm, backlog)
    procs = b.start_consumers(stream, consumers)
    b.wait_leases(keys, consumers)
    publisher: Publisher | ForeignPublisher = (
        ForeignPublisher(b.client, keys) if foreign else Publisher(b.client, keys)
    )
    feed_updates = b.feed_updates()
    publisher.publish_cycle(warm)
    b.wait_drained(keys, len(warm))
    b.wait_stats_flushed(feed_updates + len(warm))
    before = b.table_state()
    stats_before = b.stats(keys)
    for proc in procs:
        proc.send_signal(signal.SIGSTOP)
    total = 0
    for snapshots in backlog:
        publisher.publish_cycle(snapshots)
        total += len(snapshots)
    read_before = b.stats(keys).get("read", 0)
    start = time.perf_counter()
    for proc in procs:
        proc.send_signal(signal.SIGCONT)
    end = b.wait_drained(keys, read_before + total)
    stats = {k: v - stats_before.get(k, 0) for k, v in b.stats(keys).items()}
    b.stop(procs)  # first, so the backends flush their statistics as they exit
    time.sleep(0.5)
    after = b.table_state()
    run = RunResult(
        rate,
        consumers,
        total,
        end - start,
        stats,
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[3] - before[3],
        after[4] - before[4],
        expected,
        backlog[0],
        (warm[0].captured_at_ms, backlog[-1][-1].captured_at_ms),
    )
    if consumers == 1 and with_yardstick:
        run.yardstick_s = yardstick(b, keys, warm, backlog, expected)
    return run


def latency(b: Bench, target_per_s: float) -> tuple[float, float, int]:
    """Publish at a steady rate and time each entry from its XADD (its id) until it is acknowledged.

    An entry is acknowledged once it lies below the group's oldest pending entry and at or below its
    last-delivered id; the XACK follows the commit by one Redis round trip.
    """
    b.reset_database()
    stream, keys = b.new_stream("latency")
    sim = b.simulator(0.2)
    procs = b.start_consumers(stream, 1)
    b.wait_leases(keys, 1)
    publisher = Publisher(b.client, keys)
    warm = sim.cycle(b.next_ts())
    publisher.publish_cycle(warm)
    b.wait_drained(keys, len(warm))
    needed = int(target_per_s * b.size.latency_s) + 1
    queue: list[Snapshot] = []
    while len(queue) < needed:
        queue += sim.cycle(b.next_ts())
    outstanding: dict[str, list[tuple[int, int]]] = {s: [] for s in keys.all_shards()}
    latencies: list[int] = []
    sent, start = 0, time.perf_counter()
    read_before = b.stats(keys).get("read", 0)
    while sent < needed:
        due = min(needed, int((time.perf_counter() - start) * target_per_s))
        if due > sent:
            pipe = b.client.pipeline(transaction=False)
            chunk = queue[sent:due]
            targets = [keys.shard(shard_of(s.event, s.bookmaker, keys.shards)) for s in chunk]
            for target, s in zip(targets, chunk):
                pipe.xadd(target, encode(s))  # type: ignore[arg-type]
            for target, entry_id in zip(targets, pipe.execute()):
                outstanding[target].append(stream_id(entry_id))
            sent = due
        _collect_acked(b, keys, outstanding, latencies)
        time.sleep(POLL_S)
    b.wait_drained(keys, read_before + needed, tick=lambda: _collect_acked(b, keys, outstanding, latencies))
    _collect_acked(b, keys, outstanding, latencies)
    b.stop(procs)
    latencies.sort()
    return (
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
        len(latencies),
    )


def _collect_acked(
    b: Bench, keys: Keys, outstanding: dict[str, list[tuple[int, int]]], latencies: list[int]
) -> None:
    pipe = b.client.pipeline(transaction=False)
    for stream in outstanding:
        pipe.xpending(stream, GROUP)
        pipe.xinfo_groups(stream)
    replies = pipe.execute()
    now = ms_now()
    for i, (stream, ids) in enumerate(outstanding.items()):
        summary, groups = replies[2 * i], replies[2 * i + 1]
        delivered = next(
            (stream_id(g["last-delivered-id"]) for g in groups if g["name"] == GROUP.encode()), (0, 0)
        )
        oldest = stream_id(summary["min"]) if summary["pending"] else None
        done = 0
        for entry in ids:
            if entry > delivered or (oldest is not None and entry >= oldest):
                break
            latencies.append(now - entry[0])
            done += 1
        del ids[:done]


def peak_rss(b: Bench, entries: int) -> tuple[int, float]:
    """Peak RSS (kB) of one consumer working through a backlog of `entries`, and its drain rate."""
    b.reset_database()
    stream, keys = b.new_stream("rss")
    sim = b.simulator(0.2)
    publisher = Publisher(b.client, keys, buffer_limit=entries + 1, hard_cap=entries + 1)
    total = 0
    while total < entries:
        snapshots = sim.cycle(b.next_ts())[: entries - total]
        publisher.publish_cycle(snapshots)
        total += len(snapshots)
    # Trimming as in production, so the acknowledged backlog leaves Redis while the consumer works.
    procs = b.start_consumers(stream, 1, ODDS_TRIM_INTERVAL_S="5")
    start = time.perf_counter()
    end = b.wait_drained(keys, total)
    peak = vm_hwm_kb(procs[0].pid)
    b.stop(procs)
    return peak, total / (end - start)


def many_feeds(b: Bench, feeds: int) -> tuple[int, int, int, float, int]:
    """One consumer through `feeds` snapshots of as many distinct feeds (two markets each, trimming on).

    Returns the consumer's peak RSS (kB), the fingerprint hash's memory (bytes) and field count after the
    drain, the time one sweep pass takes to expire them all, and how many fields that pass left.
    """
    b.reset_database()
    stream, keys = b.new_stream("feeds")
    publisher = Publisher(b.client, keys, buffer_limit=feeds + 1, hard_cap=feeds + 1, high_water=1.0)
    ts = b.next_ts()
    markets = (Market("1X2", "", {"1": 2.1, "X": 3.3, "2": 3.6}), Market("BTTS", "", {"Yes": 1.8, "No": 2.0}))
    for start in range(0, feeds, 30_000):
        publisher.publish_cycle(
            Snapshot(f"sr:match:{i // len(BOOKMAKERS)}", BOOKMAKERS[i % len(BOOKMAKERS)], ts, markets)
            for i in range(start, min(feeds, start + 30_000))
        )
    procs = b.start_consumers(stream, 1, ODDS_TRIM_INTERVAL_S="5")
    b.wait_drained(keys, feeds)
    peak = vm_hwm_kb(procs[0].pid)
    b.stop(procs)
    fingerprint_bytes = sum(int(b.client.memory_usage(h, samples=0) or 0) for h in keys.all_fingerprints())
    fields = sum(int(b.client.hlen(h)) for h in keys.all_fingerprints())
    # The captures are an hour old: a one-minute expiry makes one pass delete every one of them.
    sweep = FingerprintSweep(b.client, keys, expiry_s=60)
    start_s = time.perf_counter()
    while True:
        sweep.step()
        if sweep.passes:
            break
    return (
        peak,
        fingerprint_bytes,
        fields,
        time.perf_counter() - start_s,
        sum(int(b.client.hlen(h)) for h in keys.all_fingerprints()),
    )


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
