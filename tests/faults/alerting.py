"""Which alerts a fault case fires: a real Prometheus scraping the case's consumers and producer.

Opt-in, because it adds a server to every case: `ODDS_FAULTS_ALERTS=1 make faults`. Each case then runs a
Prometheus of its own that scrapes every second and evaluates deploy/alerts.yml with every duration divided
by TIME_SCALE (`for: 10m` becomes 30 s, a `[5m]` window 15 s), since a case lasts seconds where the rules
think in minutes. At the end of the case, before its consumers stop, the alerts that were firing at some
moment, and those that were only pending (their condition true, but not for long enough), are recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import yaml

from consumer.localservers import free_port
from producer.metrics import serve
from producer.publisher import Publisher
from tests.prometheus import CONSUMER_JOB, PRODUCER_JOB, RULES, Prometheus

TIME_SCALE = 20
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RANGE = re.compile(r"\[([^\]]+)\]")


@dataclass(frozen=True)
class CaseAlerts:
    fault: str
    firing: list[str]
    pending_only: list[str]


SEEN: list[CaseAlerts] = []


def asked() -> bool:
    return os.environ.get("ODDS_FAULTS_ALERTS") == "1"


def scaled(duration: str, factor: int = TIME_SCALE) -> str:
    """A Prometheus duration divided by factor, in whole milliseconds: 5m -> 15000ms for 20."""
    total = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(duration))
    return f"{max(1, round(total * 1000 / factor))}ms"


def scaled_rules(text: str, factor: int = TIME_SCALE) -> str:
    """The rule file with each `for` and each range or subquery window divided by factor."""
    doc = yaml.safe_load(text)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["expr"] = _RANGE.sub(
                lambda m: "[" + ":".join(scaled(part, factor) for part in m.group(1).split(":")) + "]",
                rule["expr"],
            )
            if "for" in rule:
                rule["for"] = scaled(rule["for"], factor)
    return yaml.safe_dump(doc, sort_keys=False)


class AlertWatch:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "ODDS_FAULTS_ALERTS=1 needs prometheus (Debian/Ubuntu: apt-get install prometheus)"
            )
        self._dir = workdir / "prometheus"
        self._dir.mkdir(exist_ok=True)
        rules = self._dir / "alerts.yml"
        rules.write_text(scaled_rules(RULES.read_text()))
        self._targets = self._dir / "targets.json"
        self._consumers: list[str] = []
        self._producer_port = free_port()
        self._write_targets()
        self._prometheus = Prometheus(binary, self._dir, {}, rule_files=[rules], file_sd=self._targets)
        self._producer_server: WSGIServer | None = None
        self._started_s = time.time()

    def __enter__(self) -> AlertWatch:
        self._prometheus.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._producer_server is not None:
            self._producer_server.shutdown()
        self._prometheus.stop()

    def consumer_port(self) -> int:
        """A metrics port for a consumer about to start; Prometheus scrapes it from now on."""
        port = free_port()
        self._consumers.append(f"127.0.0.1:{port}")
        self._write_targets()
        return port

    def serve_producer(self, publisher: Publisher) -> None:
        if self._producer_server is None:
            self._producer_server = serve(publisher, self._producer_port, addr="127.0.0.1")

    def record(self, fault: str) -> CaseAlerts:
        """The alerts that fired, and those only pending, since the watch started."""
        window = f"{int(time.time() - self._started_s) + 1}s"
        time.sleep(2)  # two more evaluations of the final state
        states = {}
        for state in ("firing", "pending"):
            result = self._prometheus.query(f'max_over_time(ALERTS{{alertstate="{state}"}}[{window}])')
            states[state] = {series["metric"]["alertname"] for series in result}
        seen = CaseAlerts(fault, sorted(states["firing"]), sorted(states["pending"] - states["firing"]))
        SEEN.append(seen)
        return seen

    def _write_targets(self) -> None:
        groups = [
            {"targets": list(self._consumers), "labels": {"job": CONSUMER_JOB}},
            {"targets": [f"127.0.0.1:{self._producer_port}"], "labels": {"job": PRODUCER_JOB}},
        ]
        partial = self._targets.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        partial.replace(self._targets)  # atomic, so Prometheus never reads half a file


def table(seen: list[CaseAlerts]) -> str:
    lines = ["| fault | fired | only pending |", "|---|---|---|"]
    for case in seen:
        lines.append(
            f"| {case.fault} | {', '.join(case.firing) or '-'} | {', '.join(case.pending_only) or '-'} |"
        )
    return "\n".join(lines)
