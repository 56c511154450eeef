"""Which alerts a fault case fires: a real Prometheus scraping the case's consumers and producer.

Opt-in, because it adds a server to every case: `ODDS_FAULTS_ALERTS=1 make faults`. Each case then runs a
Prometheus of its own that scrapes every second and evaluates deploy/alerts.yml with every duration divided
by TIME_SCALE (`for: 10m` becomes 30 s, a `[5m]` window 15 s), since a case lasts seconds where the rules
think in minutes. At the end of the case, before its consumers stop, the alerts that were firing at some
moment, and those that were only pending (their condition true, but not for long enough), are recorded.

Prometheus passes new targets from service discovery to its scrapers every 5 s at most, which is most of
a case, so the consumers' metrics ports come from a pool configured as static targets from the start: a
port no consumer uses yet is just a target that is down.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import yaml

from producer.metrics import serve
from producer.publisher import Publisher
from tests.prometheus import CONSUMER_JOB, PRODUCER_JOB, RULES, Prometheus, distinct_free_ports

TIME_SCALE = 20
CONSUMER_PORTS = 40  # more consumer processes than the longest case starts (SIGKILL 20x: 23)
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
        own_port, self._producer_port, *self._free_ports = distinct_free_ports(2 + CONSUMER_PORTS)
        targets = {
            CONSUMER_JOB: [f"127.0.0.1:{port}" for port in self._free_ports],
            PRODUCER_JOB: [f"127.0.0.1:{self._producer_port}"],
        }
        self._prometheus = Prometheus(binary, self._dir, targets, rule_files=[rules], port=own_port)
        self._producer_server: WSGIServer | None = None
        self._started_s = time.time()

    def __enter__(self) -> AlertWatch:
        self._prometheus.__enter__()
        # Scraping from the case's first second on: every target has been tried once.
        self._prometheus.wait_for(f'count(up{{job="{CONSUMER_JOB}"}}) == {CONSUMER_PORTS}', timeout_s=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._producer_server is not None:
            self._producer_server.shutdown()
        self._prometheus.stop()

    @property
    def prometheus(self) -> Prometheus:
        return self._prometheus

    def consumer_port(self) -> int:
        """A metrics port for a consumer about to start, one Prometheus already scrapes."""
        if not self._free_ports:
            raise RuntimeError(
                f"more than {CONSUMER_PORTS} consumer processes in one case: raise CONSUMER_PORTS"
            )
        return self._free_ports.pop(0)

    def serve_producer(self, publisher: Publisher) -> None:
        if self._producer_server is None:
            self._producer_server = serve(publisher, self._producer_port, addr="127.0.0.1")

    def record(self, fault: str) -> CaseAlerts:
        """The alerts that fired, and those only pending, from the first scrape of a consumer on.

        Before it, Prometheus and the servers were starting, and no consumer could be there yet.
        """
        time.sleep(2)  # two more evaluations of the final state
        since = f"{int(time.time() - self._started_s) + 1}s"
        first = self._prometheus.query(f"min(min_over_time(timestamp(odds_consumer_shards)[{since}:1s]))")
        if not first:
            raise AssertionError("no consumer was ever scraped in this case")
        # One evaluation later, the alerts about no consumer being there have seen it.
        window = f"{max(1, int(time.time() - float(first[0]['value'][1]) - 1))}s"
        states = {}
        for state in ("firing", "pending"):
            result = self._prometheus.query(f'max_over_time(ALERTS{{alertstate="{state}"}}[{window}])')
            states[state] = {series["metric"]["alertname"] for series in result}
        seen = CaseAlerts(fault, sorted(states["firing"]), sorted(states["pending"] - states["firing"]))
        SEEN.append(seen)
        return seen


def table(seen: list[CaseAlerts]) -> str:
    lines = ["| fault | fired | only pending |", "|---|---|---|"]
    for case in seen:
        lines.append(
            f"| {case.fault} | {', '.join(case.firing) or '-'} | {', '.join(case.pending_only) or '-'} |"
        )
    return "\n".join(lines)
