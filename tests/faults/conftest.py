"""Fault-run results: the table is printed at the end of the session and written next to the README.

Every FaultRun.finish() appends a row to harness.RESULTS. A run that leaves slow cases out (make test) writes
.faults-report-quick.md, so it never overwrites the figures of the full matrix (make faults).
"""

from __future__ import annotations

import datetime
import platform

import pytest

from tests.faults import alerting
from tests.faults.harness import REPO, RESULTS
from tests.faults.report import dead_letter_reasons, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not RESULTS:
        return
    text = table(RESULTS)
    terminalreporter.section("fault matrix")
    terminalreporter.write_line(text)
    markexpr = str(config.getoption("markexpr", "") or "")
    quick = "not slow" in markexpr
    path = REPO / (".faults-report-quick.md" if quick else ".faults-report.md")
    args = " ".join(config.invocation_params.args)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(
        f"# Fault matrix\n\n`pytest {args}` (marker expression: {markexpr or 'none'}), {when}, "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}\n\n{text}\n"
        + (f"\n## Dead letters by reason\n\n{reasons}\n" if (reasons := dead_letter_reasons(RESULTS)) else "")
    )
    terminalreporter.write_line(f"written to {path.name}")
    if alerting.SEEN:
        alerts = alerting.table(alerting.SEEN)
        terminalreporter.section(f"alerts (rule durations divided by {alerting.TIME_SCALE})")
        terminalreporter.write_line(alerts)
        (REPO / ".faults-report-alerts.md").write_text(
            f"# Alerts per fault case\n\n`pytest {args}`, {when}, deploy/alerts.yml with every duration "
            f"divided by {alerting.TIME_SCALE}\n\n{alerts}\n"
        )
