"""Draw the Grafana dashboard's panels from a real Prometheus during a scripted fault run, for the README.

    python -m tests.faults.dashboard docs/dashboard.png

The run: two consumers under a steady producer, a poison entry, one consumer SIGKILLed and replaced, and
Postgres stopped for 15 s. Prometheus scrapes every second (tests/faults/alerting.py). Each panel of
deploy/grafana/dashboards/odds-pipeline.json is then queried over the run and drawn where its gridPos puts
it: Grafana's layout and queries, drawn with matplotlib rather than by Grafana.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from producer.simulator import Simulator
from shared.wire import Snapshot
from tests.faults import alerting
from tests.faults.harness import FaultRun, RunConfig
from tests.prometheus import Prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "odds-pipeline.json"
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval for one-second scrapes and a one-second step
COLUMN_PX, ROW_PX, DPI = 62, 34, 100


class WallClockSimulator(Simulator):
    """Captures stamped with the wall clock, not the fault runs' fixed epoch: the latency panels then show
    the real time from capture to commit."""

    _last_ms = 0

    def cycle(self, captured_at_ms: int) -> list[Snapshot]:
        self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
        return super().cycle(self._last_ms)


def scenario(run: FaultRun) -> None:
    run._sim = WallClockSimulator(run.config.spec)
    run.start_consumers()
    with run.publishing():
        time.sleep(15)
        run.client.xadd(
            run.keys.shard(0), {"v": "1", "event": "sr:1", "bookmaker": "x", "ts": "soon", "data": b""}
        )
        time.sleep(5)
        with run.fault("SIGKILL c0, replaced 10 s later"):
            run.consumer("c0").kill()
            time.sleep(10)
            run.start_consumer("c2")
        time.sleep(10)
        with run.fault("Postgres down 15 s"):
            run.postgres.stop()
            time.sleep(15)
            run.postgres.start()
        time.sleep(15)


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template) or template


def draw(prometheus: Prometheus, start: float, end: float, out: Path) -> None:
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width, height = 24 * COLUMN_PX, rows * ROW_PX
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    figure.patch.set_facecolor("#f4f5f5")
    for panel in panels:
        g = panel["gridPos"]
        box = [
            g["x"] / 24 + 0.004,
            1 - (g["y"] + g["h"]) / rows + 0.004,
            g["w"] / 24 - 0.008,
            g["h"] / rows - 0.008,
        ]
        if panel["type"] == "row":
            figure.text(box[0], box[1] + box[3] / 2, panel["title"], fontsize=11, weight="bold", va="center")
            continue
        frame = figure.add_axes(box)
        frame.set_facecolor("white")
        frame.set_xticks([])
        frame.set_yticks([])
        frame.set_title(panel["title"], loc="left", fontsize=9)
        targets = [
            (t["expr"].replace("$__rate_interval", RATE_INTERVAL), t["legendFormat"])
            for t in panel["targets"]
        ]
        if panel["type"] == "stat":
            shown = []
            for expr, template in targets:
                for series in prometheus.query(expr, at=end):
                    shown.append(f"{float(series['value'][1]):,.0f} {legend(template, series['metric'])}")
            frame.text(0.5, 0.45, "\n".join(shown) or "no data", ha="center", va="center", fontsize=12)
            continue
        ax = figure.add_axes([box[0] + 0.03, box[1] + 0.03, box[2] - 0.04, box[3] - 0.07])
        for expr, template in targets:
            for series in prometheus.query_range(expr, start, end, 1.0):
                times = [dt.datetime.fromtimestamp(float(t), dt.UTC) for t, _ in series["values"]]
                ax.plot(
                    times,
                    [float(v) for _, v in series["values"]],
                    linewidth=1.2,
                    label=legend(template, series["metric"]),
                )
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left", frameon=False)
    figure.savefig(out, format="png")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ["ODDS_FAULTS_ALERTS"] = "1"
    with tempfile.TemporaryDirectory() as workdir, FaultRun("dashboard", Path(workdir), RunConfig()) as run:
        assert run.alerts is not None
        start = time.time()
        scenario(run)
        # Drawn up to the drained state, while the consumers still run and are scraped.
        drained, note = run.wait_drained()
        assert drained, note
        time.sleep(6)  # a refresh of the backlog gauges, and its scrape
        end = time.time()
        row = run.finish()
        draw(run.alerts.prometheus, start, end, Path(argv[0]))
    seen = alerting.SEEN[-1]
    print(f"wrote {argv[0]}; nothing lost or doubled: {row.passed}; fired: {seen.firing}")
    return 0 if row.passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
