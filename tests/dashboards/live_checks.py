"""The checks of the no-blind-spots tests, for the standalone and the cluster stack alike: poll a real
Prometheus until every chosen query has returned a number (or every metric has a series) or a deadline passes,
then name what never did."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.dashboards.dashboard_queries import (
    Query,
    alert_rules,
    dashboards,
    metric_names,
    needed_variables,
    queries,
    resolve_variables,
    substitute,
)
from tests.dashboards.stack import Prometheus


def has_data(result: list[dict[str, Any]]) -> bool:
    """At least one sample whose value is a number (histogram_quantile of no traffic gives NaN)."""
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def _substituted(prom: Prometheus, wanted: Callable[[Query], bool], deadline: float) -> dict[Query, str]:
    """Each chosen query with the variables it needs resolved from Prometheus (retried until the deadline)."""
    chosen: dict[Query, str] = {}
    for name, dashboard in dashboards().items():
        mine = [query for query in queries(name, dashboard) if wanted(query)]
        only = needed_variables(dashboard, [query.expr for query in mine])
        values: dict[str, str] = {}
        while not values:
            try:
                values = resolve_variables(dashboard, prom.label_values, only)
            except ValueError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name}: {exc}\n{prom.logs()}")
                time.sleep(0.5)
        chosen.update((query, substitute(query.expr, values)) for query in mine)
    return chosen


def queries_without_data(prom: Prometheus, wanted: Callable[[Query], bool], deadline_s: float) -> list[str]:
    """The chosen queries of every dashboard that Prometheus rejected or that returned no number in time."""
    deadline = time.monotonic() + deadline_s
    pending = _substituted(prom, wanted, deadline)
    assert pending, "no dashboard queries chosen"
    errors: dict[Query, str] = {}
    while pending and time.monotonic() < deadline:
        for query, expr in list(pending.items()):
            try:
                if has_data(prom.query(expr)):
                    del pending[query]
            except ValueError as exc:  # a query Prometheus rejects never gets better
                errors[query] = str(exc)
                del pending[query]
        if pending:
            time.sleep(0.5)
    lines = [f"  {query}\n    error: {error}" for query, error in errors.items()]
    return lines + [f"  {query}\n    no data within {deadline_s:.0f}s: {expr}" for query, expr in pending.items()]


def metrics_without_series(prom: Prometheus, rules: list[dict[str, Any]], deadline_s: float) -> dict[str, str]:
    """Metric -> alert, for the metrics the rules read that no target exports within the deadline."""
    missing = {name: rule["alert"] for rule in rules for name in metric_names(rule["expr"])}
    deadline = time.monotonic() + deadline_s
    while missing and time.monotonic() < deadline:
        for name in list(missing):
            if prom.query(f'count({{__name__="{name}"}})'):
                del missing[name]
        if missing:
            time.sleep(0.5)
    return missing


def firing_critical(prom: Prometheus) -> list[dict[str, str]]:
    """The labels of every critical alert that fires."""
    return [
        alert["labels"]
        for alert in prom.api("alerts")["alerts"]
        if alert["state"] == "firing" and alert["labels"].get("severity") == "critical"
    ]


def alert_rule_problems(prom: Prometheus, deadline_s: float) -> list[str]:
    """What is wrong with the alert rules in Prometheus: not all loaded and evaluated within the deadline, a
    rule that fails to evaluate, an expression the query API rejects. Empty when there is nothing."""
    expected = {rule["alert"] for rule in alert_rules()}
    assert expected, "no alert rules found"

    def evaluated() -> dict[str, dict[str, Any]]:
        groups = prom.api("rules", type="alert")["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        done = all(rule.get("lastEvaluation", "").startswith("2") for rule in rules.values())
        return rules if expected <= rules.keys() and done else {}

    deadline = time.monotonic() + deadline_s
    loaded: dict[str, dict[str, Any]] = {}
    while not loaded and time.monotonic() < deadline:
        loaded = evaluated()
        if not loaded:
            time.sleep(0.5)
    if not loaded:
        return [f"Prometheus did not load and evaluate all of {sorted(expected)}"]
    problems = [f"alert {name} fails to evaluate: {rule.get('lastError')}"
                for name, rule in loaded.items() if rule["health"] != "ok"]
    for rule in alert_rules():
        try:
            prom.query(rule["expr"])
        except ValueError as exc:
            problems.append(f"alert {rule['alert']}: expression rejected: {exc}\n{rule['expr']}")
    return problems
