"""`python -m tests.bench.scale [--kills 10]`: lease balance for 1-6 consumers, failover and hand-over.

Real consumer processes on a 16-shard stream (the default count), with the default lease TTL, while a
producer publishes all along. Balance: the shards each consumer holds once the leases settle after each
join. Failover: a consumer holding shards is SIGKILLed; timed are the moment every one of its shards is
leased by another consumer, and the moment each of them is read again past the entries it held (what it
left pending claimed, and newer entries delivered). The killed consumer is replaced before the next kill.
Hand-over: the same with SIGTERM, after which a consumer finishes its batch and gives its shards back.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time

from producer.publisher import Publisher
from shared.keys import Keys
from shared.stream_ids import stream_id
from tests.bench.harness import GROUP, Bench, Size, add_server_options, bench

SHARDS = 16
POLL_S = 0.02


def holders(b: Bench, keys: Keys) -> list[str | None]:
    return [None if h is None else h.decode() for h in b.lease_holders(keys)]


def wait_balanced(b: Bench, keys: Keys, consumers: int, timeout_s: float = 60.0) -> list[int]:
    """Until every shard is leased and each of `consumers` holds floor or ceil; returns the holdings."""
    share = {SHARDS // consumers, -(-SHARDS // consumers)}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owners = holders(b, keys)
        counts = [owners.count(o) for o in set(owners) if o is not None]
        if None not in owners and len(counts) == consumers and set(counts) <= share:
            return sorted(counts, reverse=True)
        time.sleep(POLL_S)
    raise RuntimeError(f"leases not balanced over {consumers} consumers: {holders(b, keys)}")


class Feed:
    """A producer publishing one small cycle every 0.1 s, on its own thread, until stopped."""

    def __init__(self, b: Bench, keys: Keys) -> None:
        self._publisher = Publisher(b.client, keys)
        self._sim = b.simulator(0.2, events=20)
        self._b = b
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._publisher.publish_cycle(self._sim.cycle(self._b.next_ts()))


def failover_once(
    b: Bench, keys: Keys, victim: subprocess.Popen[bytes], name: str, sig: signal.Signals
) -> tuple[float, float]:
    """Signal the victim; seconds until its shards are leased by others, and until they are read again."""
    shards = [n for n, h in enumerate(holders(b, keys)) if h == name]
    last = {n: b.client.xrevrange(keys.shard(n), count=1) for n in shards}
    latest = {n: stream_id(rows[0][0]) if rows else (0, 0) for n, rows in last.items()}
    killed = time.perf_counter()
    victim.send_signal(sig)
    victim.wait()
    owned_at = None
    while True:
        now = time.perf_counter()
        if now - killed > 120:
            raise RuntimeError(f"shards {shards} not resumed in 120 s")
        owners = holders(b, keys)
        if owned_at is None and all(owners[n] not in (None, name) for n in shards):
            owned_at = now
        if owned_at is not None and all(resumed(b, keys, n, name, latest[n]) for n in shards):
            return owned_at - killed, now - killed
        time.sleep(POLL_S)


def resumed(b: Bench, keys: Keys, n: int, dead: str, latest: tuple[int, int]) -> bool:
    """The shard's group has delivered past what was there at the kill, and the dead one holds nothing."""
    stream = keys.shard(n)
    groups = [g for g in b.client.xinfo_groups(stream) if g["name"].decode() == GROUP]
    if not groups or stream_id(groups[0]["last-delivered-id"]) <= latest:
        return False
    held = b.client.xpending_range(stream, GROUP, min="-", max="+", count=1, consumername=dead)
    return not held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.scale", description=__doc__)
    parser.add_argument("--kills", type=int, default=10)
    add_server_options(parser)
    args = parser.parse_args(argv)
    size = Size(
        events=20, backlog_cycles=1, latency_s=1, rss_backlog=1, feeds=1, large_events=1, large_cycles=1
    )
    shards = {"ODDS_SHARDS": str(SHARDS), "ODDS_LEASE_TTL_MS": "3000"}
    with bench(args.redis_url, args.database_url, size) as b:
        stream, _ = b.new_stream("scale")
        keys = Keys(stream, GROUP, SHARDS)
        with Feed(b, keys):
            print(f"| consumers | shards held once settled ({SHARDS} shards) | settled after the join |")
            print("|---:|---|---:|")
            procs: list[subprocess.Popen[bytes]] = []
            for consumers in range(1, 7):
                joined = time.perf_counter()
                procs += b.start_consumers(stream, 1, [f"scale-{consumers}"], **shards)
                held = wait_balanced(b, keys, consumers)
                took = time.perf_counter() - joined
                print(f"| {consumers} | {' / '.join(map(str, held))} | {took:.1f} s |")
            b.stop(procs[3:])
            live = {f"scale-{i + 1}": p for i, p in enumerate(procs[:3])}
            wait_balanced(b, keys, 3)
            figures = {}
            for sig in (signal.SIGKILL, signal.SIGTERM):
                owned, resumed_s = [], []
                for kill in range(args.kills):
                    name = next(n for n in sorted(live) if n in holders(b, keys))
                    took_owned, took_resumed = failover_once(b, keys, live.pop(name), name, sig)
                    owned.append(took_owned)
                    resumed_s.append(took_resumed)
                    fresh = f"scale-{sig.name}-{kill}"
                    live[fresh] = b.start_consumers(stream, 1, [fresh], **shards)[0]
                    wait_balanced(b, keys, 3)
                figures[sig.name] = owned, resumed_s
            b.stop(list(live.values()))
    for sig_name, (owned, resumed_s) in figures.items():
        print(
            f"\n{sig_name} of one of 3 consumers, {args.kills} times: its shards leased by the others after "
            f"median {statistics.median(owned):.2f} s, max {max(owned):.2f} s; read again after median "
            f"{statistics.median(resumed_s):.2f} s, max {max(resumed_s):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
