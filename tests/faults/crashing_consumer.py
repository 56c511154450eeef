"""Test-only entry point: the real consumer daemon, which SIGKILLs itself at one point of its commit order.

`python -m tests.faults.crashing_consumer run --name NAME` behaves exactly like `python -m consumer run`
until its FAULT_CRASH_AFTER_BATCHES-th batch (default 1) reaches FAULT_CRASH_POINT:

- after_commit: the Postgres transaction has committed; nothing of the batch reached Redis.
- after_fingerprints: the fingerprints were written to Redis; no acknowledgement, counter or dead letter.
- before_xack: fingerprints, dead letters and counters were written; only the XACKs are missing.

The production code writes fingerprints and acknowledgements in one atomic script, so the last two states
cannot arise from a crash of this process alone; they are produced here on purpose, because the guarantee
must not depend on that atomicity (a Redis that lost its AOF tail, or a future refactoring, would expose
them).
SIGKILL leaves no chance for cleanup: no finally block, no lease release, no flush.
"""

from __future__ import annotations

import os
import signal
import sys

from consumer import __main__ as cli
from consumer.plan import Decoder, Parsed, Plan
from consumer.stream import Outcome, ShardStreams, encode_fingerprint
from consumer.writer import Writer

POINTS = ("after_commit", "after_fingerprints", "before_xack")
_point = os.environ.get("FAULT_CRASH_POINT", "")
_after = int(os.environ.get("FAULT_CRASH_AFTER_BATCHES", "1"))
_batches = 0


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _due() -> bool:
    global _batches
    _batches += 1
    return _batches >= _after


_apply = Writer.apply
_finish = ShardStreams.finish


def _apply_then_die(self: Writer, parsed: list[Parsed], decode: Decoder) -> Plan:
    result = _apply(self, parsed, decode)
    if result.inserts and _due():
        _die()
    return result


def _finish_partly_then_die(self: ShardStreams, outcome: Outcome) -> None:
    if not outcome.fingerprints or not _due():
        _finish(self, outcome)
        return
    keys, client = self._keys, self._client
    pipe = client.pipeline(transaction=False)
    for stream, prints in outcome.fingerprints.items():
        mapping = {feed: encode_fingerprint(fp, ts) for feed, (fp, ts) in prints.items()}
        pipe.hset(keys.fingerprints(keys.shard_number(stream)), mapping=mapping)  # type: ignore[arg-type]
    if _point == "before_xack":
        for poison in outcome.dead:
            pipe.xadd(keys.dead(keys.shard_number(poison.entry.stream)), self._dead_letter(poison))
        for name, n in outcome.counts.items():
            pipe.hincrby(keys.shard_stats(0), name, n)
    pipe.execute()
    _die()


def main() -> int:
    if _point not in POINTS:
        raise SystemExit(f"FAULT_CRASH_POINT must be one of {POINTS}, not {_point!r}")
    if _point == "after_commit":
        Writer.apply = _apply_then_die  # type: ignore[method-assign]
    else:
        ShardStreams.finish = _finish_partly_then_die  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
