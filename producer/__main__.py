"""`python -m producer simulate`: a scraper simulator publishing through the real Publisher."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

import structlog

from producer.core import PublishRefused
from producer.metrics import serve
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.cli import EXIT_REFUSED, EXIT_SETTINGS, add_connection_options, settings_from
from shared.logs import configure
from shared.settings import SettingsError

log = structlog.get_logger("producer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m producer")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="publish simulated scrape cycles")
    add_connection_options(sim)
    sim.add_argument("--events", type=int, default=50)
    sim.add_argument("--bookmakers", default="sportybet,bet9ja,betking", help="comma-separated slugs")
    sim.add_argument("--markets", type=int, default=40, help="markets per snapshot")
    sim.add_argument(
        "--change-rate", type=float, default=0.2, help="share of snapshots that change per cycle"
    )
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--cycles", type=int, default=0, help="cycles to run; 0 runs for ever")
    sim.add_argument("--interval-s", type=float, default=1.0, help="time between cycle starts")
    sim.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics here; 0 is off (env ODDS_METRICS_PORT)"
    )
    args = parser.parse_args(argv)
    configure(args.log_level, args.log_json)
    spec = SimulationSpec(
        events=args.events,
        bookmakers=tuple(b.strip() for b in args.bookmakers.split(",") if b.strip()),
        markets=args.markets,
        change_rate=args.change_rate,
        seed=args.seed,
    )
    try:
        settings = settings_from(args, metrics_port=args.metrics_port)
    except SettingsError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    publisher = Publisher.from_settings(settings)
    if settings.metrics_port:
        serve(publisher, settings.metrics_port)
    try:
        return simulate(publisher, spec, args.cycles, args.interval_s)
    except PublishRefused as exc:
        # No wait fixes it: one line saying what to fix, and a code a supervisor shows, not a retry loop.
        log.error("producer_refused", error=str(exc))
        return EXIT_REFUSED


def simulate(publisher: Publisher, spec: SimulationSpec, cycles: int, interval_s: float) -> int:
    stop = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    simulator = Simulator(spec)
    last_ts = 0
    cycle = 0
    while not stop and (cycles == 0 or cycle < cycles):
        started = time.monotonic()
        # Capture times must grow per feed even when cycles run faster than the clock ticks.
        last_ts = max(int(time.time() * 1000), last_ts + 1)
        snapshots = simulator.cycle(last_ts)
        result = publisher.publish_cycle(snapshots)
        cycle += 1
        log.info(
            "cycle_published",
            cycle=cycle,
            snapshots=len(snapshots),
            published=result.published,
            buffered=result.buffered,
            overflowed=result.overflowed,
            held_back=result.held_back,
            published_total=publisher.total_published,
            cycle_s=round(time.monotonic() - started, 4),
            **publisher.progress(),
        )
        if cycles == 0 or cycle < cycles:
            # In short slices: a sleep resumes after the signal handler, so one long sleep would make a
            # SIGTERM wait out the whole interval.
            next_cycle = started + interval_s
            while not stop and (left := next_cycle - time.monotonic()) > 0:
                time.sleep(min(left, 0.1))
    while publisher.buffered and not stop:
        publisher.flush()
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
