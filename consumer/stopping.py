"""A graceful stop on SIGTERM or SIGINT, and waits that a stop request cuts short."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType


class Stop:
    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signal).name if self.signal else None

    def install(self) -> None:
        """The first signal asks for a stop; a second one leaves at once (whatever is pending is claimed
        by the shards' next owner)."""

        def on_signal(signum: int, _: FrameType | None) -> None:
            if self.requested:
                os._exit(128 + signum)
            # Only flags here: logging or waking a lock from a handler can deadlock with the main thread.
            self.signal = signum
            self.requested = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def sleep(self, seconds: float, tick: Callable[[], None]) -> None:
        """Sleep in short slices, calling tick at each, so that a stop request ends the wait promptly.

        The signal handler only sets a flag: waking a threading.Event from a handler can deadlock when the
        signal lands while the main thread holds that Event's lock inside wait().
        """
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            tick()
            time.sleep(min(left, 0.1))
