"""What the throwaway servers share: free ports, process helpers, and the registry that kills leftovers."""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shutil
import signal
import socket
from dataclasses import dataclass
from types import TracebackType
from typing import Self

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.05
_LOG_TAIL_CHARS = 2000


# Servers still running at interpreter exit are killed so an aborted test run cannot leak them.
live_servers: set[LocalServer] = set()
private_dirs: set[pathlib.Path] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(live_servers):
        with contextlib.suppress(Exception):
            server.kill()
    for path in list(private_dirs):
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (another process may still grab it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: pathlib.Path) -> str:
    try:
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    except OSError:
        return "<no log>"


def pid_alive(pid: int, name: str | None = None) -> bool:
    # Daemonised postmasters are reparented to pid 1, which may never reap them, so a zombie counts as dead.
    try:
        comm, _, rest = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return False
    return rest.split()[0] != "Z" and (name is None or comm.endswith(f"({name}"))


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def signal_quietly(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass(frozen=True)
class TLSFiles:
    """A server's certificate and key (PEM), and the CA certificate clients verify it with."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


class LocalServer:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server: it holds its connections open and answers nothing, as a frozen host."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        """Send signum to every process of the server."""
        raise NotImplementedError

    def _cleanup(self) -> None:
        pass

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            try:
                self.stop()
            finally:
                self.kill()
        finally:
            self._cleanup()
