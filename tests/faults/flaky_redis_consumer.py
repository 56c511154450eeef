"""Test-only entry point: the real consumer daemon, whose Redis connection drops after the Postgres commit.

`python -m tests.faults.flaky_redis_consumer run --name NAME` behaves exactly like `python -m consumer run`,
except that every FAULT_DROP_EVERY-th batch (default 3) finds its Redis connection gone when it comes to
record the batch: the Postgres transaction has committed, and the bookkeeping (fingerprints, dead
letters, counters, acknowledgements) fails with the ConnectionError redis-py raises for a dropped
connection, before anything reached Redis. The daemon then retries as it would after a real drop.
"""

from __future__ import annotations

import os
import sys

import redis

from consumer import __main__ as cli
from consumer.stream import Outcome, ShardStreams

_every = int(os.environ.get("FAULT_DROP_EVERY", "3"))
_calls = 0
_finish = ShardStreams.finish


def _finish_or_drop(self: ShardStreams, outcome: Outcome) -> None:
    global _calls
    _calls += 1
    if _calls % _every == 0:
        self._client.connection_pool.disconnect()
        raise redis.ConnectionError("Connection closed by server (dropped by the fault wrapper)")
    _finish(self, outcome)


def main() -> int:
    ShardStreams.finish = _finish_or_drop  # type: ignore[method-assign]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
