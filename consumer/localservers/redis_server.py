"""A throwaway redis-server on a free loopback port: AOF, TLS, ACL users and extra options as asked."""

from __future__ import annotations

import pathlib
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from urllib.parse import quote

from consumer.localservers.base import (
    POLL_INTERVAL_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LocalServer,
    TLSFiles,
    free_port,
    live_servers,
    log_tail,
)


def _command(*words: str) -> bytes:
    """One command in the Redis protocol: safe for any bytes in the words, unlike an inline command."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word.encode()
        parts += [f"${len(raw)}\r\n".encode(), raw, b"\r\n"]
    return b"".join(parts)


def _redis_ready(port: int, pid: int, ca: pathlib.Path | None, auth: tuple[str, str] | None) -> bool:
    # Ready: the server answering on port is process pid (not some other server) and has loaded its data.
    hello = _command("AUTH", *auth) if auth else b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
            sock = (
                ssl.create_default_context(cafile=str(ca)).wrap_socket(raw, server_hostname="127.0.0.1")
                if ca
                else raw
            )
            with sock:
                sock.sendall(hello + b"PING\r\nINFO server\r\n")
                reply = b""
                while b"\r\n" not in reply.partition(b"process_id:")[2]:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
    except OSError:
        return False
    # A server still replaying its AOF answers PING with -LOADING.
    answering_pid = reply.partition(b"process_id:")[2].split(b"\r\n", 1)[0]
    expected = (b"+OK\r\n" if auth else b"") + b"+PONG"
    return reply.startswith(expected) and answering_pid == str(pid).encode()


class RedisServer(LocalServer):
    """A redis-server child process bound to 127.0.0.1.

    appendfsync None runs without any persistence; "always" or "everysec" turns the AOF on with that
    fsync policy, and the AOF in workdir survives kill() + restart().

    With tls it listens with TLS only, on its port. With an aclfile in config (and the default user off),
    admin names the user and password that checks it is up.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        port: int | None = None,
        appendfsync: str | None = None,
        config: Mapping[str, str] | None = None,
        tls: TLSFiles | None = None,
        admin: tuple[str, str] | None = None,
    ) -> None:
        if appendfsync not in (None, "always", "everysec", "no"):
            raise ValueError(f"unsupported appendfsync policy: {appendfsync!r}")
        self.port: int = port if port is not None else free_port()
        self._appendfsync = appendfsync
        self._config = dict(config or {})  # more redis-server options, such as maxmemory
        self.tls = tls
        self._admin = admin
        self._dir = pathlib.Path(workdir) / f"redis-{self.port}"
        self._log_path = pathlib.Path(workdir) / f"redis-{self.port}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for()

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        """The URL a client connects with, as that user; with TLS, verifying the server against the CA."""
        login = f"{quote(user or '', safe='')}:{quote(password, safe='')}@" if password is not None else ""
        if self.tls is None:
            return f"redis://{login}127.0.0.1:{self.port}/0"
        return f"rediss://{login}127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca))}"

    @property
    def pid(self) -> int | None:
        """Pid of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _command(self) -> list[str]:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self._dir)]
        if self.tls is None:
            cmd += ["--port", str(self.port)]
        else:
            cmd += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            cmd += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            cmd += ["--tls-ca-cert-file", str(self.tls.ca)]
        cmd += ["--daemonize", "no", "--save", ""]
        if self._appendfsync is None:
            cmd += ["--appendonly", "no"]
        else:
            cmd += ["--appendonly", "yes", "--appendfsync", self._appendfsync]
        for name, value in self._config.items():
            cmd += [f"--{name}", value]
        return cmd

    def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError(f"redis on port {self.port} is already running")
        self._dir.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        live_servers.add(self)
        deadline = time.monotonic() + START_TIMEOUT_S
        ca = self.tls.ca if self.tls else None
        while not _redis_ready(self.port, self._proc.pid, ca, self._admin):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis on port {self.port} did not start:\n{log_tail(self._log_path)}")
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """SIGTERM and wait: redis fsyncs the AOF on the way out; with no persistence it just exits."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            live_servers.discard(self)
            return
        # A stopped process would hold SIGTERM pending forever.
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        live_servers.discard(self)

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        live_servers.discard(self)

    def _signal(self, signum: signal.Signals) -> None:
        if self.pid is None or self._proc is None:
            raise RuntimeError(f"redis on port {self.port} is not running")
        self._proc.send_signal(signum)
