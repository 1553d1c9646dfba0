"""The alert rules: promtool's checks and unit tests, and what every rule must carry."""

from __future__ import annotations

import subprocess

import pytest

from tests.dashboards.dashboard_queries import DASHBOARDS, alert_rules, rule_files
from tests.dashboards.stack import tool

TESTS = sorted((DASHBOARDS / "alerts" / "tests").glob("*.yml"))
#: What the issue asks to be alerted on, at least.
REQUIRED = {
    "RedisDown",
    "RedisMemoryHigh",
    "RedisAofWriteFailing",
    "RedisRejectedConnections",
    "FrameBufferDown",
    "ConsumerLagGrowing",
    "EndToEndLatencyHigh",
    "FramesDropped",
    "DeadLettersGrowing",
    "BreakerOpen",
    "PendingEntriesStuck",
    "RedisClusterStateNotOk",
    "RedisClusterSlotsUncovered",
    "RedisMasterWithoutReplica",
    "ShardBacklogGrowing",
}


def promtool(*args: str) -> None:
    """Run promtool in dashboards/ and fail with its output."""
    done = subprocess.run([tool("promtool"), *args], cwd=DASHBOARDS, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_promtool_check_config() -> None:
    """The scrape configuration (and the rule files it names) is valid."""
    promtool("check", "config", "prometheus.yml")


def test_promtool_check_rules() -> None:
    """Every rule file is valid."""
    promtool("check", "rules", *map(str, rule_files()))


def test_promtool_test_rules() -> None:
    """The unit tests show every alert firing and not firing."""
    assert TESTS, "no promtool unit tests"
    promtool("test", "rules", *map(str, TESTS))


def test_required_alerts_exist() -> None:
    """The alerts the issue asks for are all there."""
    assert {rule["alert"] for rule in alert_rules()} >= REQUIRED


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_rule_is_documented_and_tested(rule: dict[str, object]) -> None:
    """Severity, summary, description and runbook; unit tests that expect it both firing and silent."""
    name = str(rule["alert"])
    labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
    assert isinstance(labels, dict) and labels.get("severity") in ("critical", "warning", "info"), name
    assert isinstance(annotations, dict), name
    for key in ("summary", "description", "runbook"):
        assert annotations.get(key), f"{name}: no {key} annotation"
    text = "\n".join(path.read_text() for path in TESTS)
    cases = [line for line in text.splitlines() if f"alertname: {name}" in line]
    assert any("exp_alerts: []" in line for line in cases), f"{name}: no test shows it silent"
    assert any("exp_alerts: []" not in line for line in cases), f"{name}: no test shows it firing"
    runbook = str(annotations["runbook"])
    anchor = runbook.split("#", 1)[1]
    doc = (DASHBOARDS.parent / runbook.split("#", 1)[0]).read_text().lower()
    assert f"### {name.lower()}" in doc, f"{name}: runbook section {anchor} missing from docs"
