"""The fleet's alert rules (monitoring/rules/) as code: Prometheus' own checker and unit tests pass, every alert
has a test case that fires it, and every cnctl_* metric a rule reads is one the hosts export (cnhost/metrics.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnhost import metrics
from tests.unit.test_metrics import full_report

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "monitoring" / "rules").glob("*.yml"))
CASES = sorted((ROOT / "tests" / "rules").glob("*.test.yml"))


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:  # a system package of the one list: missing is a failure, never a skip
        pytest.fail("promtool is missing: `sudo python3 cnctl/sandbox/prereqs.py ensure` installs it (Debian's "
                    "prometheus)", pytrace=False)
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_the_rules_pass_promtools_checks() -> None:
    checked = promtool("check", "rules", *map(str, RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_the_rules_unit_tests_pass(case: Path) -> None:
    tested = promtool("test", "rules", case.name, cwd=case.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_that_fires_it_and_says_its_severity() -> None:
    fired = {test["alertname"] for case in CASES for group in yaml.safe_load(case.read_text())["tests"]
             for test in group.get("alert_rule_test", []) if test.get("exp_alerts")}
    assert sorted(set(alerts()) - fired) == []
    assert {name: rule["labels"]["severity"] in ("critical", "warning") for name, rule in alerts().items()} == dict.fromkeys(alerts(), True)


def test_every_host_metric_a_rule_reads_is_one_the_hosts_export() -> None:
    read = {name for rule in alerts().values() for name in re.findall(r"\bcnctl_[a-z_]+", rule["expr"])}
    exported = set(re.findall(r"^# TYPE (cnctl_[a-z_]+) ", metrics.exposition(full_report()), re.MULTILINE))
    assert read and sorted(read - exported) == []
