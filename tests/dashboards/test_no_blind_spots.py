"""No blind spots: every dashboard query and alert expression, run against a real Prometheus.

Prometheus scrapes the real ``frame-buffer run`` (synthetic cameras, consumers) and a real redis_exporter
every second (``stack`` in conftest.py). The test polls until every query has returned data or a deadline
passes, then names every query that never did. The panels of the Redis Cluster row and the alerts of
redis-cluster.yml read series only a cluster exports: test_cluster_no_blind_spots.py runs those.
"""

from __future__ import annotations

import pytest

from tests.dashboards.dashboard_queries import alert_rules
from tests.dashboards.live_checks import (
    alert_rule_problems,
    firing_critical,
    metrics_without_series,
    queries_without_data,
)
from tests.dashboards.stack import Prometheus

pytestmark = pytest.mark.slow
DEADLINE_S = 120.0


def test_every_panel_query_returns_data(stack: Prometheus) -> None:
    """Each query of each panel of each dashboard but the cluster's, variables substituted, returns a number."""
    lines = queries_without_data(stack, lambda query: not query.cluster_only, DEADLINE_S)
    assert not lines, "dashboard queries without data:\n" + "\n".join(lines) + "\n" + stack.logs()


def test_every_alert_expression_evaluates(stack: Prometheus) -> None:
    """Prometheus loaded every rule file, evaluates every rule without error, and accepts every expression."""
    problems = alert_rule_problems(stack, DEADLINE_S)
    assert not problems, "\n".join(problems) + "\n" + stack.logs()


def test_healthy_stack_pages_nobody(stack: Prometheus) -> None:
    """With Redis up and the service healthy, the critical alerts stay quiet (no false positives)."""
    critical = firing_critical(stack)
    assert not critical, f"critical alerts on a healthy stack: {critical}"


def test_every_metric_an_alert_reads_exists(stack: Prometheus) -> None:
    """An alert on a misspelt or renamed metric would evaluate fine and never fire: each name must have series
    (the cluster's alerts: in test_cluster_no_blind_spots.py)."""
    missing = metrics_without_series(stack, alert_rules(cluster=False), DEADLINE_S)
    assert not missing, f"metrics read by alerts but scraped by no target (metric: alert): {missing}"
