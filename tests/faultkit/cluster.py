"""A throwaway Redis Cluster on loopback ports: redis-server --cluster-enabled, joined by redis-cli."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.crc import key_slot

from consumer.localservers import RedisServer, free_port

BUS_OFFSET = 10_000  # the cluster bus listens on the client port plus this
# Each node is a RedisServer (started, checked ready and killed as every throwaway server is) with these.
# No diskless-sync delay: by default a master waits 5 s for more replicas before the first sync, and a
# replica not yet in sync cannot be promoted.
NODE_CONFIG = {
    "cluster-enabled": "yes",
    "cluster-config-file": "nodes.conf",
    "cluster-node-timeout": "2000",
    "repl-diskless-sync-delay": "0",
}


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
        self._nodes = [
            RedisServer(workdir, port=cluster_port(), config=NODE_CONFIG)
            for _ in range(masters * (1 + replicas))
        ]
        self._replicas = replicas
        self._stack = contextlib.ExitStack()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    @property
    def url(self) -> str:
        return self._nodes[0].url

    def __enter__(self) -> LocalCluster:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is needed to join a local cluster")
        try:
            for node in self._nodes:
                self._stack.enter_context(node)
            subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
                + ["--cluster-replicas", str(self._replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
            )
            deadline = time.monotonic() + 20.0
            while not all(_serving(port) and _in_sync(port) for port in self.ports):
                if time.monotonic() > deadline:
                    raise RuntimeError("the local cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def master_of(self, key: str) -> RedisServer:
        """The node that serves key's slot now, as the first live node says (CLUSTER SHARDS would too)."""
        slot = key_slot(key.encode())
        for node in self._nodes:
            if node.pid is None:
                continue
            try:
                for start, end, *served in redis.Redis(port=node.port).execute_command("CLUSTER SLOTS"):
                    if start <= slot <= end:
                        port = int(served[0][1])
                        return next(n for n in self._nodes if n.port == port)
            except redis.RedisError:
                continue
        raise RuntimeError(f"no live node says who serves {key}")

    def rejoin(self, node: RedisServer, timeout_s: float = 30.0) -> None:
        """Start a killed node again: it rejoins as a replica of whoever took its slots; returns once in
        sync."""
        node.start()
        deadline = time.monotonic() + timeout_s
        while not (_serving(node.port) and _in_sync(node.port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node.port} did not rejoin the cluster in {timeout_s:g} s")
            time.sleep(0.05)

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica of master, as master itself lists them (INFO replication)."""
        info = redis.Redis(port=master.port).info("replication")
        port = int(info["slave0"]["port"])
        return next(n for n in self._nodes if n.port == port)

    def kill_master_of(
        self, key: str, replica_behind_s: float = 0.0, timeout_s: float = 30.0
    ) -> tuple[RedisServer, float]:
        """SIGKILL the master serving key, and wait until a replica serves its slot: returns the dead
        master and the seconds from the kill until the promoted replica answered for the key.

        replica_behind_s > 0 cuts the replica off first, for that long: frozen (SIGSTOP) and its link
        closed by the master, as a network partition would, so that the master dies with writes it
        acknowledged and never sent (freezing alone is not enough: what the master wrote to the link waits
        in the frozen replica's socket buffer). The replica is resumed right after the kill."""
        dead = self.master_of(key)
        lagging = self.replica_of(dead) if replica_behind_s > 0 else None
        if lagging is not None:
            lagging.pause()
            redis.Redis(port=dead.port).client_kill_filter(_type="replica")
            time.sleep(replica_behind_s)
        dead.kill()
        if lagging is not None:
            lagging.resume()
        killed = time.monotonic()
        while time.monotonic() - killed < timeout_s:
            try:
                promoted = self.master_of(key)
                if (
                    promoted is not dead
                    and redis.Redis(port=promoted.port).info("replication")["role"] == "master"
                ):
                    return dead, time.monotonic() - killed
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over {key} within {timeout_s:g} s")


def _in_sync(port: int) -> bool:
    """A master, or a replica whose link to its master is up (it holds a copy it could be promoted with)."""
    try:
        info = redis.Redis(port=port).info("replication")
    except redis.RedisError:
        return False
    return info["role"] == "master" or info.get("master_link_status") == "up"


def _serving(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port).cluster("info")["cluster_state"] == "ok")
    except redis.RedisError:
        return False
