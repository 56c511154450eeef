"""A throwaway PostgreSQL cluster on a free loopback port, run as the postgres user when started as root."""

from __future__ import annotations

import os
import pathlib
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from typing import IO
from urllib.parse import quote

import psycopg
from psycopg import sql

from consumer.localservers.base import (
    POLL_INTERVAL_S,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LocalServer,
    TLSFiles,
    child_pids,
    free_port,
    live_servers,
    log_tail,
    pid_alive,
    private_dirs,
    signal_quietly,
)


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


class PostgresServer(LocalServer):
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
            private_dirs.add(self._private_dir)
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
        return pid if pid > 0 and pid_alive(pid, "postgres") else None

    def _run(self, args: list[str], log: IO[bytes], timeout_s: float = START_TIMEOUT_S * 3) -> None:
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
            raise RuntimeError(f"{args[0]} {args[-1]} failed:\n{log_tail(self._log_path)}")

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
            pg_ctl = ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(START_TIMEOUT_S * 3))]
            # Registered before pg_ctl: a start that times out may still leave a postmaster behind.
            live_servers.add(self)
            self._run([*pg_ctl, "-o", options, "start"], log, START_TIMEOUT_S * 4)
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
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres on port {self.port} accepts no connections:\n{log_tail(self._log_path)}"
                    ) from None
                time.sleep(POLL_INTERVAL_S)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m fast|smart|immediate; immediate needs crash recovery on the next start."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unsupported shutdown mode: {mode!r}")
        if self.pid is None:
            live_servers.discard(self)
            return
        self.resume()
        with open(self._log_path, "ab") as log:
            args = ["pg_ctl", "-D", str(self.data_dir), "-w", "-t", str(int(STOP_TIMEOUT_S)), "-m", mode]
            self._run([*args, "stop"], log, STOP_TIMEOUT_S * 2)
        live_servers.discard(self)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend at once, like a machine crash, and wait for them.

        Killing the backends too matters: survivors would still hold the shared memory segment and
        the next start would refuse to run.
        """
        pid = self.pid
        if pid is not None:
            # Frozen first so it cannot fork new backends between listing and killing them.
            signal_quietly(pid, signal.SIGSTOP)
            victims = [pid, *child_pids(pid)]
            for victim in victims:
                signal_quietly(victim, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while any(pid_alive(victim) for victim in victims):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres processes {victims} survived SIGKILL")
                time.sleep(POLL_INTERVAL_S)
        live_servers.discard(self)

    def _signal(self, signum: signal.Signals) -> None:
        """The postmaster and all its direct children (backends and auxiliary processes)."""
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"postgres on port {self.port} is not running")
        # Postmaster first on stop (no new forks), last on continue (children are ready when it runs).
        if signum == signal.SIGSTOP:
            signal_quietly(pid, signum)
        for child in child_pids(pid):
            signal_quietly(child, signum)
        if signum != signal.SIGSTOP:
            signal_quietly(pid, signum)

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _cleanup(self) -> None:
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            private_dirs.discard(self._private_dir)
