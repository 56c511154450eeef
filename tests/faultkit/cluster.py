"""A throwaway Redis Cluster on loopback ports: redis-server --cluster-enabled, joined by redis-cli."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from consumer.localservers import free_port

BUS_OFFSET = 10_000  # the cluster bus listens on the client port plus this


def cluster_port() -> int:
    """A free port whose bus port (port + 10,000) is a valid port and free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + BUS_OFFSET))
            except OSError:
                continue
        return port


class LocalCluster:
    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0) -> None:
        self._dir = workdir
        self._count = masters * (1 + replicas)
        self._replicas = replicas
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> LocalCluster:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed for a local cluster")
        try:
            for _ in range(self._count):
                port = cluster_port()
                node = self._dir / f"node-{port}"
                node.mkdir(parents=True)
                self._procs.append(
                    subprocess.Popen(
                        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(node)]
                        + ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
                        + ["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                self.ports.append(port)
            for port in self.ports:
                self._wait(lambda p=port: redis.Redis(port=p).ping())
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
                + ["--cluster-replicas", str(self._replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
            )
            for port in self.ports:
                self._wait(lambda p=port: redis.Redis(port=p).info("cluster")["cluster_enabled"] == 1)
                self._wait(lambda p=port: redis.Redis(port=p).cluster("info")["cluster_state"] == "ok")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self._procs:
            proc.kill()
            proc.wait()

    @staticmethod
    def _wait(ready: object, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the local cluster did not come up")
            time.sleep(0.05)
