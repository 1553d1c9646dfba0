"""No blind spots: every dashboard query and alert expression, run against a real Prometheus.

Prometheus scrapes the real ``frame-buffer run`` (synthetic cameras, consumers) and a real redis_exporter
every second (``stack`` in conftest.py). The test polls until every query has returned data or a deadline
passes, then names every query that never did.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from tests.dashboards.dashboard_queries import (
    Query,
    alert_rules,
    dashboards,
    metric_names,
    queries,
    resolve_variables,
    substitute,
)
from tests.dashboards.stack import Prometheus

pytestmark = pytest.mark.slow
DEADLINE_S = 120.0


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample whose value is a number (histogram_quantile of no traffic gives NaN)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def test_every_panel_query_returns_data(stack: Prometheus) -> None:
    """Each query of each panel of each dashboard, variables substituted, returns a number."""
    deadline = time.monotonic() + DEADLINE_S
    pending: dict[Query, str] = {}
    for name, dashboard in dashboards().items():
        values: dict[str, str] = {}
        while not values:
            try:
                values = resolve_variables(dashboard, stack.label_values)
            except ValueError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name}: {exc}\n{stack.logs()}")
                time.sleep(0.5)
        for query in queries(name, dashboard):
            pending[query] = substitute(query.expr, values)
    assert pending, "no dashboard queries found"
    errors: dict[Query, str] = {}
    while pending and time.monotonic() < deadline:
        for query, expr in list(pending.items()):
            try:
                if has_data(stack.query(expr)):
                    del pending[query]
            except ValueError as exc:  # a query Prometheus rejects never gets better
                errors[query] = str(exc)
                del pending[query]
        if pending:
            time.sleep(0.5)
    lines = [f"  {query}\n    error: {error}" for query, error in errors.items()]
    lines += [f"  {query}\n    no data within {DEADLINE_S:.0f}s: {expr}" for query, expr in pending.items()]
    assert not lines, "dashboard queries without data:\n" + "\n".join(lines) + "\n" + stack.logs()


def test_every_alert_expression_evaluates(stack: Prometheus) -> None:
    """Prometheus loaded every rule file, evaluates every rule without error, and accepts every expression."""
    expected = {rule["alert"] for rule in alert_rules()}
    assert expected, "no alert rules found"

    def evaluated() -> dict[str, dict[str, Any]]:
        groups = stack.api("rules", type="alert")["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        done = all(rule.get("lastEvaluation", "").startswith("2") for rule in rules.values())
        return rules if expected <= rules.keys() and done else {}

    deadline = time.monotonic() + DEADLINE_S
    loaded: dict[str, dict[str, Any]] = {}
    while not loaded and time.monotonic() < deadline:
        loaded = evaluated()
        if not loaded:
            time.sleep(0.5)
    assert loaded, f"Prometheus did not load and evaluate all of {sorted(expected)}\n{stack.logs()}"
    unhealthy = {name: rule.get("lastError") for name, rule in loaded.items() if rule["health"] != "ok"}
    assert not unhealthy, f"alert rules failing to evaluate: {unhealthy}"
    for rule in alert_rules():
        try:
            stack.query(rule["expr"])
        except ValueError as exc:
            pytest.fail(f"alert {rule['alert']}: expression rejected: {exc}\n{rule['expr']}")


def test_healthy_stack_pages_nobody(stack: Prometheus) -> None:
    """With Redis up and the service healthy, the critical alerts stay quiet (no false positives)."""
    firing = stack.api("alerts")["alerts"]
    critical = [
        alert["labels"]
        for alert in firing
        if alert["state"] == "firing" and alert["labels"].get("severity") == "critical"
    ]
    assert not critical, f"critical alerts on a healthy stack: {critical}"


def test_every_metric_an_alert_reads_exists(stack: Prometheus) -> None:
    """An alert on a misspelt or renamed metric would evaluate fine and never fire: each name must have series."""
    wanted = {name: rule["alert"] for rule in alert_rules() for name in metric_names(rule["expr"])}
    deadline = time.monotonic() + DEADLINE_S
    missing = dict(wanted)
    while missing and time.monotonic() < deadline:
        for name in list(missing):
            if stack.query(f'count({{__name__="{name}"}})'):
                del missing[name]
        if missing:
            time.sleep(0.5)
    assert not missing, f"metrics read by alerts but scraped by no target (metric: alert): {missing}"
