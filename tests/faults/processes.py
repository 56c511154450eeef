"""A consumer process under test: kill, stop, freeze and thaw it, and read its log."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


class ConsumerProcess:
    """One consumer daemon process; its JSON log goes to log_path."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.frozen = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no finally block, no lease release, whatever is in hand stays pending."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self.frozen = False

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a warm stop) and wait; the exit code."""
        self.thaw()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"consumer {self.name} ignored SIGTERM for {timeout_s} s") from None

    def freeze(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.alive():
            self.popen.send_signal(signal.SIGCONT)
        self.frozen = False

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Wait until the daemon logged consumer_started: its signal handlers are installed from then on."""
        deadline = time.monotonic() + timeout_s
        while '"consumer_started"' not in self.log_text():
            if not self.alive():
                return  # died already (a crashing wrapper may): its exit code tells the test why
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer {self.name} did not start within {timeout_s} s")
            time.sleep(0.02)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""
