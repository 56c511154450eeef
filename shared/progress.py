"""A progress line for long commands, redrawn in place on a terminal and silent everywhere else.

Output piped to a file or read by a script stays exactly what the command prints, so progress goes to
stderr, and only when stderr is a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Self, TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "",
        stream: TextIO | None = None,
        redraw_s: float = 0.2,
        heartbeat_s: float | None = None,
    ) -> None:
        """heartbeat_s redraws the line on a thread that often, so the elapsed time moves while a single
        long step (one migration) runs; without it the line changes only with update()."""
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty()
        self._redraw_s = redraw_s
        self._heartbeat_s = heartbeat_s
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.enabled and self._heartbeat_s:
            self._heartbeat = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._heartbeat.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self.enabled and time.monotonic() - self._drawn_at >= self._redraw_s:
            self._draw()

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def finish(self) -> None:
        """Draw the final figures and end the line; nothing at all if nothing was ever drawn."""
        if self._finished.is_set():
            return
        self._finished.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.enabled:
            self._draw()
            self._write("\n")

    def line(self) -> str:
        count = f"{self.done:,}" if self.total is None else f"{self.done:,} of {self.total:,}"
        unit = f" {self.unit}" if self.unit else ""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        elapsed = int(time.monotonic() - self._started)
        return f"{self.label}: {count}{unit}{share}, {elapsed // 60}:{elapsed % 60:02d}"

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        # \r back to the start, the line, then clear whatever a longer previous line left behind.
        self._write(f"\r{self.line()}\x1b[K")

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text)
            self._stream.flush()

    def _beat(self) -> None:
        assert self._heartbeat_s is not None
        while not self._finished.wait(self._heartbeat_s):
            self._draw()
