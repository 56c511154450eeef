"""A real Prometheus server (Debian's `prometheus` binary) on a free loopback port, and its HTTP API.

It scrapes the targets it is given every second and evaluates the project's alert rules, so tests can ask it
what an operator's Prometheus would see.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from consumer.localservers import free_port

RULES = Path(__file__).resolve().parent.parent / "deploy" / "alerts.yml"
CONSUMER_JOB, PRODUCER_JOB = "odds-consumer", "odds-producer"


class PrometheusError(RuntimeError):
    """The API answered with an error (a bad query), or not at all."""


class Prometheus:
    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: dict[str, list[str]],
        rule_files: list[Path] | None = None,
        interval: str = "1s",
        port: int | None = None,
    ) -> None:
        """targets: job -> the host:port addresses to scrape; port: where to listen (default: a free one)."""
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._binary = binary
        self._config = workdir / "prometheus.yml"
        jobs: list[dict[str, Any]] = [
            {"job_name": job, "static_configs": [{"targets": hosts}]} for job, hosts in targets.items()
        ]
        self._config.write_text(
            yaml.safe_dump(
                {
                    # A frozen process must not hold a scrape beyond the next one.
                    "global": {
                        "scrape_interval": interval,
                        "scrape_timeout": interval,
                        "evaluation_interval": interval,
                    },
                    "rule_files": [str(p) for p in (rule_files if rule_files is not None else [RULES])],
                    "scrape_configs": jobs,
                }
            )
        )
        self._log = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with open(self._log, "ab") as log:
            self._process = subprocess.Popen(
                [
                    self._binary,
                    f"--config.file={self._config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return self._log.read_text(errors="replace")[-chars:]

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready within {timeout_s} s:\n{self.log_tail()}")

    # -- the HTTP API --------------------------------------------------------------------------------

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, else PrometheusError with the server's reason."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with a JSON reason
            body = json.loads(exc.read() or b"{}")
        except OSError as exc:
            raise PrometheusError(f"{url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant vector as [{"metric": labels, "value": [time, "text"]}]; an error for a non-vector."""
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        data = self.api("query", **params)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} gives a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[dict[str, Any]]:
        """A range query as [{"metric": labels, "values": [[time, "text"], ...]}]."""
        data = self.api("query_range", query=expr, start=str(start), end=str(end), step=str(step_s))
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The instant vector as {sorted label pairs without __name__: value}."""
        return {
            tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__")): float(s["value"][1])
            for s in self.query(expr)
        }

    def wait_for(self, expr: str, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Poll until the query returns something (a bound for a stuck run, not a speed check)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{expr!r} returned nothing within {timeout_s} s")

    def alert_rules(self) -> list[dict[str, Any]]:
        groups = self.api("rules", type="alert")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"}


def distinct_free_ports(count: int) -> list[int]:
    """Loopback ports free a moment ago, all different: held open together while they are picked."""
    with contextlib.ExitStack() as held:
        sockets = [
            held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
