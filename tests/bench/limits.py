"""`python -m tests.bench.limits`: what rejecting an absurd snapshot costs, against decoding a usual one.

Each payload is decoded (and refused) in a loop; the figure is the best of five runs per payload, and the
peak memory decoding takes (tracemalloc) with the limits and without them.
"""

from __future__ import annotations

import timeit
import tracemalloc
from collections.abc import Callable

import msgpack

from producer.simulator import SimulationSpec, Simulator
from shared.wire import InvalidEntry, canonical_markets
from shared.wire_data import decode_data
from tests.absurd import SHAPES


def _quietly(work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except InvalidEntry:
            pass

    return run


def _peak(work: Callable[[], object]) -> int:
    tracemalloc.start()
    _quietly(work)()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    usual = canonical_markets(
        Simulator(SimulationSpec(events=1, markets=40)).cycle(1_795_000_000_000)[0].markets
    )
    payloads = {"usual snapshot, 40 markets": usual} | {name: build() for name, build in SHAPES.items()}
    base = None
    print(f"{'payload':<32} {'bytes':>10} {'decode':>10} {'vs usual':>9} {'peak, limits':>13} {'none':>8}")
    for name, data in payloads.items():
        run = _quietly(lambda data=data: decode_data(data))
        run()  # the first decode of a market's labels remembers them
        number = max(1, int(20_000 * len(usual) / len(data)))
        seconds = min(timeit.repeat(run, number=number, repeat=5)) / number
        base = base or seconds
        unlimited = _peak(lambda data=data: msgpack.unpackb(data, strict_map_key=False))
        print(
            f"{name:<32} {len(data):>10,} {seconds * 1e6:>8.1f}us {seconds / base:>8.2f}x "
            f"{_peak(lambda data=data: decode_data(data)) / 1e6:>11.2f}MB {unlimited / 1e6:>6.1f}MB"
        )


if __name__ == "__main__":
    main()
