"""promtool on the shipped Prometheus files: config and rules are valid, and every alert
fires (and stays quiet) on synthetic series at its real durations and thresholds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy import DEPLOY, alert_rules, recording_rules

PROM = DEPLOY / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed (scripts/test.sh installs Debian's prometheus)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


def test_config_and_rules_are_valid() -> None:
    done = promtool("check", "config", str(PROM / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = sorted(str(p) for p in (PROM / "rules").glob("*.yml"))
    done = promtool("check", "rules", *rules)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(recording_rules())} rules found" in done.stdout
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_every_alert_fires_in_the_rule_unit_tests() -> None:
    tests = sorted(str(p) for p in (PROM / "tests").glob("*_test.yml"))
    done = promtool("test", "rules", *tests)
    assert done.returncode == 0, done.stdout + done.stderr
    fired = {
        case["alertname"]
        for path in tests
        for test in yaml.safe_load(Path(path).read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == set(alert_rules())
