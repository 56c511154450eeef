"""Alert rules: valid for promtool, unit-tested both ways, saying what to check first as the README does."""

from __future__ import annotations

import pathlib
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.alerting import scaled_rules

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
README = ROOT / "README.md"


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def words(text: str) -> str:
    """Text with every run of white space made one space: the README wraps its lines, YAML folds them."""
    return " ".join(text.split())


def check_first(rule: dict[str, Any]) -> str:
    description = words(rule["annotations"]["description"])
    assert "Check first" in description, f"{rule['alert']} does not say what to check first"
    return description[description.index("Check first") :]


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 4)
    return text[start:end]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=DEPLOY, timeout=120)


def test_rule_file_and_scrape_config_pass_promtool_check(promtool: str) -> None:
    # Given the rule file and the compose stack's Prometheus config that loads it
    # When promtool checks them
    checked_rules = run(promtool, "check", "rules", "alerts.yml")
    checked_config = run(promtool, "check", "config", "prometheus.yml")
    # Then both are valid, and the config loads every alert
    assert checked_rules.returncode == 0, checked_rules.stdout + checked_rules.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked_rules.stdout
    assert checked_config.returncode == 0, checked_config.stdout + checked_config.stderr
    assert "1 rule files found" in checked_config.stdout


def test_alert_unit_tests_pass(promtool: str) -> None:
    # When promtool runs the synthetic-series tests
    result = run(promtool, "test", "rules", "alerts_test.yml")
    # Then every expectation holds
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    # Given the unit tests' expectations per alert
    doc = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    fired, silent = set(), set()
    for test in doc["tests"]:
        for case in test["alert_rule_test"]:
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    # Then each alert has a case where it fires and one where it must not
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_alert_says_what_to_check_first_in_the_readme_troubleshooting_words(rule: dict[str, Any]) -> None:
    # Given an alert's annotations
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert rule["labels"]["severity"] in ("warning", "critical")
    advice = check_first(rule)
    # Then its advice is word for word in the README's troubleshooting
    assert advice in words(readme_section("Troubleshooting"))
    # And the README's alert table lists it with that advice and its severity
    row = next(
        (line for line in readme_section("Alerts").splitlines() if line.startswith(f"| `{rule['alert']}` |")),
        None,
    )
    assert row is not None, f"{rule['alert']} is missing from the README's alert table"
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == rule["labels"]["severity"]
    assert cells[3] == advice


def test_readme_lists_no_alert_the_rules_do_not_have() -> None:
    listed = set(re.findall(r"^\| `(\w+)` \|", readme_section("Alerts"), re.M))
    assert listed == {rule["alert"] for rule in rules()}


def test_fault_runs_scale_every_rule_duration_and_the_result_still_checks(
    promtool: str, tmp_path: Path
) -> None:
    # Given the rule file with its durations divided by 20, as the fault runs evaluate it
    scaled = scaled_rules((DEPLOY / "alerts.yml").read_text(), factor=20)
    (tmp_path / "alerts.yml").write_text(scaled)
    # Then windows, subquery steps and for clauses shrank, and promtool still accepts the rules
    doc = {r["alert"]: r for g in yaml.safe_load(scaled)["groups"] for r in g["rules"]}
    assert "[15000ms:3000ms]" in doc["OddsBacklogGrowing"]["expr"]
    assert doc["OddsBacklogGrowing"]["for"] == "30000ms"
    assert "[180000ms]" in doc["OddsEntriesTrimmedUnread"]["expr"]
    assert not re.search(r"\[\d+[smhd]\]", scaled)
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
