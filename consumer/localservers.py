"""Throwaway Redis and Postgres servers on free loopback ports, for the fault tests and the demo."""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote

import psycopg
from psycopg import sql

__all__ = ["PostgresServer", "RedisServer", "TLSFiles", "free_port", "postgres_bin_dir"]

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_CHARS = 2000


# Servers still running at interpreter exit are killed so an aborted test run cannot leak them.
_live: set[_Server] = set()
_private_dirs: set[pathlib.Path] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.kill()
    for path in list(_private_dirs):
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (another process may still grab it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_bin_dir() -> pathlib.Path | None:
    """Directory holding initdb/pg_ctl: the newest /usr/lib/postgresql/<N>/bin, else pg_ctl's dir on PATH."""
    versions = pathlib.Path("/usr/lib/postgresql")
    if versions.is_dir():
        candidates = [p for p in versions.iterdir() if p.name.isdigit() and (p / "bin" / "pg_ctl").exists()]
        if candidates:
            return max(candidates, key=lambda p: int(p.name)) / "bin"
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        return None
    # Resolve symlinks: a pg_ctl linked into a PATH dir usually has no initdb beside it.
    return pathlib.Path(pg_ctl).resolve().parent


def _log_tail(path: pathlib.Path) -> str:
    try:
        return path.read_text(errors="replace")[-_LOG_TAIL_CHARS:]
    except OSError:
        return "<no log>"


def _pid_alive(pid: int, name: str | None = None) -> bool:
    # Daemonised postmasters are reparented to pid 1, which may never reap them, so a zombie counts as dead.
    try:
        comm, _, rest = pathlib.Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    except OSError:
        return False
    return rest.split()[0] != "Z" and (name is None or comm.endswith(f"({name}"))


def _children(pid: int) -> list[int]:
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


def _signal_quietly(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass(frozen=True)
class TLSFiles:
    """A server's certificate and key (PEM), and the CA certificate clients verify it with."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


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


class _Server:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

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


class RedisServer(_Server):
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
        _live.add(self)
        deadline = time.monotonic() + _START_TIMEOUT_S
        ca = self.tls.ca if self.tls else None
        while not _redis_ready(self.port, self._proc.pid, ca, self._admin):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis on port {self.port} did not start:\n{_log_tail(self._log_path)}")
            time.sleep(_POLL_INTERVAL_S)

    def stop(self) -> None:
        """SIGTERM and wait: redis fsyncs the AOF on the way out; with no persistence it just exits."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            _live.discard(self)
            return
        # A stopped process would hold SIGTERM pending forever.
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _live.discard(self)

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        _live.discard(self)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self.pid is None or self._proc is None:
            raise RuntimeError(f"redis on port {self.port} is not running")
        self._proc.send_signal(signum)


class PostgresServer(_Server):
    """A private Postgres cluster listening on 127.0.0.1 only, with trust auth for user postgres.

    fsync and synchronous_commit keep their defaults (on), so kill() behaves like a real crash.
    When running as root the cluster lives in a private directory owned by the postgres user (see
    data_dir), because the server refuses to run as root and workdir may not be reachable by that user;
    it is removed on context exit. Logs always go to workdir.

    With a password, user postgres authenticates over TCP with scram-sha-256; with tls, the server has
    ssl=on and refuses TCP connections without TLS. url_for then carries the password and verify-full.
    """

    def __init__(
        self,
        workdir: pathlib.Path,
        port: int | None = None,
        password: str | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("no Postgres binaries found (initdb/pg_ctl)")
        self._bin_dir = bin_dir
        self.port: int = port if port is not None else free_port()
        self._log_path = pathlib.Path(workdir) / f"postgres-{self.port}.log"
        self._run_as = "postgres" if os.geteuid() == 0 else None
        self._private_dir: pathlib.Path | None = None
        if self._run_as is None:
            self._runtime_dir = pathlib.Path(workdir)
        else:
            self._private_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"pg-{self.port}-"))
            user = pwd.getpwnam(self._run_as)
            os.chown(self._private_dir, user.pw_uid, user.pw_gid)
            _private_dirs.add(self._private_dir)
            self._runtime_dir = self._private_dir
        self.data_dir = self._runtime_dir / f"pgdata-{self.port}"
        self.password = password
        self.tls = tls

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str, password: str | None = None) -> str:
        """The URL of a database as user postgres, with the server's password unless another is given."""
        secret = self.password if password is None else password
        login = "postgres" + (f":{quote(secret, safe='')}" if secret is not None else "")
        url = f"postgresql://{login}@127.0.0.1:{self.port}/{database}"
        if self.tls is not None:
            url += f"?sslmode=verify-full&sslrootcert={quote(str(self.tls.ca))}"
        return url

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, None when it is not running."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        pid = int(first_line) if first_line.strip().isdigit() else 0
        # A stale pid file after kill() may name a pid since reused by something else.
        return pid if pid > 0 and _pid_alive(pid, "postgres") else None

    def _run(self, args: list[str], log: IO[bytes], timeout_s: float = _START_TIMEOUT_S * 3) -> None:
        cmd = [str(self._bin_dir / args[0]), *args[1:]]
        if self._run_as is not None:
            cmd = ["runuser", "-u", self._run_as, "--", *cmd]
        # Inherited PG* variables (PGDATA, PGPORT, PGOPTIONS ...) would silently redirect the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # The log is a file, not a pipe: the daemonised postmaster keeps it open after pg_ctl returns.
        result = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self._runtime_dir,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            log.flush()
            raise RuntimeError(f"{args[0]} {args[-1]} failed:\n{_log_tail(self._log_path)}")

    def start(self) -> None:
        if self.pid is not None:
            raise RuntimeError(f"postgres on port {self.port} is already running")
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        # A crashed postmaster can linger as an unreaped zombie (its parent is pid 1, which need not reap),
        # and the new postmaster's lock checks would take that zombie for a live server.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        (self._runtime_dir / f".s.PGSQL.{self.port}.lock").unlink(missing_ok=True)
        with open(self._log_path, "ab") as log:
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(log)
            # pg_ctl hands -o to a shell, hence the quoting of the socket directory.
            options = f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self._runtime_dir))}"
            if self.tls is not None:
                options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
            pg_ctl = ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(_START_TIMEOUT_S * 3))]
            # Registered before pg_ctl: a start that times out may still leave a postmaster behind.
            _live.add(self)
            self._run([*pg_ctl, "-o", options, "start"], log, _START_TIMEOUT_S * 4)
        self._wait_accepting()

    def _initdb(self, log: IO[bytes]) -> None:
        # --no-sync only skips flushing initdb's own output; the server runs with fsync=on.
        initdb = [
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if self.password is None:
            self._run([*initdb, "--auth=trust"], log)
        else:
            pwfile = self._private_file("pwfile", self.password.encode())
            self._run([*initdb, "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"], log)
            pwfile.unlink()
        if self.tls is None:
            return
        self._private_file(self.data_dir / "server.crt", self.tls.cert.read_bytes())
        self._private_file(self.data_dir / "server.key", self.tls.key.read_bytes())
        method = "trust" if self.password is None else "scram-sha-256"
        hba = (
            f"local all all trust\nhostssl all all 127.0.0.1/32 {method}\nhost all all 127.0.0.1/32 reject\n"
        )
        self._private_file(self.data_dir / "pg_hba.conf", hba.encode())

    def _private_file(self, path: pathlib.Path | str, content: bytes) -> pathlib.Path:
        """A file only the server's user can read (Postgres refuses a key others can read)."""
        target = self._runtime_dir / path
        target.write_bytes(content)
        target.chmod(0o600)
        if self._run_as is not None:
            user = pwd.getpwnam(self._run_as)
            os.chown(target, user.pw_uid, user.pw_gid)
        return target

    def _wait_accepting(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres on port {self.port} accepts no connections:\n{_log_tail(self._log_path)}"
                    ) from None
                time.sleep(_POLL_INTERVAL_S)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m fast|smart|immediate; immediate needs crash recovery on the next start."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unsupported shutdown mode: {mode!r}")
        if self.pid is None:
            _live.discard(self)
            return
        self.resume()
        with open(self._log_path, "ab") as log:
            args = ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(_STOP_TIMEOUT_S)), "-m", mode]
            self._run([*args, "stop"], log, _STOP_TIMEOUT_S * 2)
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, like a machine crash, and wait for them.

        Killing the backends too matters: survivors would still hold the shared memory segment and
        the next start would refuse to run.
        """
        pid = self.pid
        if pid is not None:
            # Frozen first so it cannot fork new backends between listing and killing them.
            _signal_quietly(pid, signal.SIGSTOP)
            victims = [pid, *_children(pid)]
            for victim in victims:
                _signal_quietly(victim, signal.SIGKILL)
            deadline = time.monotonic() + _STOP_TIMEOUT_S
            while any(_pid_alive(victim) for victim in victims):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres processes {victims} survived SIGKILL")
                time.sleep(_POLL_INTERVAL_S)
        _live.discard(self)

    def pause(self) -> None:
        """SIGSTOP the postmaster and all its direct children (backends and auxiliary processes)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the postmaster and all its direct children."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, signum: signal.Signals) -> None:
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"postgres on port {self.port} is not running")
        # Postmaster first on stop (no new forks), last on continue (children are ready when it runs).
        if signum == signal.SIGSTOP:
            _signal_quietly(pid, signum)
        for child in _children(pid):
            _signal_quietly(child, signum)
        if signum != signal.SIGSTOP:
            _signal_quietly(pid, signum)

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _cleanup(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            _private_dirs.discard(self._private_dir)
