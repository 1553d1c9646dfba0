"""Static checks of the dashboards against the Grafana dashboard JSON model, and of their generator."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

from frame_buffer import metrics
from tests.dashboards.dashboard_queries import (
    BUILTINS,
    CLUSTER_ROW,
    DASHBOARDS,
    STABLE_UIDS,
    dashboards,
    metric_names,
    panels,
    queries,
    referenced,
    variable_query,
    variables,
)

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table", "text"}
ALL = dashboards()


def test_every_dashboard_has_its_stable_uid() -> None:
    """One file per dashboard, each with the uid that links and provisioning rely on."""
    assert set(ALL) == set(STABLE_UIDS), "add new dashboards to STABLE_UIDS, never rename a uid"
    for name, dashboard in ALL.items():
        assert dashboard["uid"] == STABLE_UIDS[name], f"{name}: uid changed"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]), f"{name}: invalid uid"
        assert dashboard.get("id") is None, f"{name}: a database id must not be committed"
        assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)


def test_generator_output_is_committed() -> None:
    """dashboards/generate.py --check: the committed JSON is exactly what the generator writes."""
    done = subprocess.run(
        [sys.executable, str(DASHBOARDS / "generate.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", sorted(ALL))
def test_panels_follow_the_model(name: str) -> None:
    """Unique integer ids, known types, grid positions inside 24 columns without overlap, and targets."""
    dashboard = ALL[name]
    ids = [item["id"] for item in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), f"{name}: panel ids {ids}"
    cells: dict[tuple[int, int], str] = {}
    for item in panels(dashboard):
        title = item.get("title") or ""
        assert item["type"] in PANEL_TYPES, f"{name}: {title}: unknown type {item['type']}"
        pos = item["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys() and pos["x"] + pos["w"] <= 24, f"{name}: {title}: {pos}"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{name}: {title} overlaps {cells[(x, y)]}"
                cells[(x, y)] = title
        if item["type"] == "row":
            continue
        assert title, f"{name}: panel {item['id']} has no title"
        assert item["datasource"] == DATASOURCE_REF, f"{name}: {title}: datasource {item['datasource']}"
        targets = item["targets"]
        assert targets, f"{name}: {title}: no queries"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), f"{name}: {title}: duplicate refIds {refs}"
        for target in targets:
            assert target["datasource"] == DATASOURCE_REF, f"{name}: {title}: target datasource"
            assert target["expr"].strip(), f"{name}: {title}: empty query"


def datasource_refs(node: Any) -> list[Any]:
    """Every value of a ``datasource`` key anywhere in the JSON."""
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [ref for value in node.values() for ref in datasource_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in datasource_refs(value)]
    return []


@pytest.mark.parametrize("name", sorted(ALL))
def test_datasource_is_a_variable(name: str) -> None:
    """A ``datasource`` variable of type datasource, and no hard-coded data source anywhere else."""
    dashboard = ALL[name]
    first = variables(dashboard)[0]
    assert (first["name"], first["type"], first["query"]) == ("datasource", "datasource", "prometheus")
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    wrong = [ref for ref in datasource_refs(dashboard) if ref not in (DATASOURCE_REF, builtin)]
    assert not wrong, f"{name}: hard-coded data sources: {wrong}"


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_variable_reference_is_defined(name: str) -> None:
    """Queries only use variables the dashboard defines (or Grafana's built-ins), and each is used."""
    dashboard = ALL[name]
    defined = {variable["name"] for variable in variables(dashboard)}
    used: set[str] = set()
    for query in queries(name, dashboard):
        names = referenced(query.expr)
        assert names <= defined | BUILTINS.keys(), f"{query}: undefined {names - defined - BUILTINS.keys()}"
        used |= names
    for variable in variables(dashboard):
        if variable["type"] == "query":
            used |= referenced(variable_query(variable))
    assert defined - {"datasource"} <= used, f"{name}: unused variables {defined - used}"


def exported_names() -> set[str]:
    """The sample names the service exports, as Prometheus stores them (``_total``, ``_bucket``)."""
    names = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.add(f"{family.name}_bucket")
        else:
            names.add(family.name)
    return names


def test_every_service_metric_is_on_a_dashboard() -> None:
    """Nothing the service measures is left off the dashboards."""
    exprs = " ".join(query.expr for name, dashboard in ALL.items() for query in queries(name, dashboard))
    missing = sorted(name for name in exported_names() if not re.search(rf"\b{name}\b", exprs))
    assert not missing, f"metrics on no dashboard: {missing}"


def test_the_latency_target_is_drawn() -> None:
    """The end-to-end latency panel draws the 10 ms target as a threshold line."""
    item = next(p for p in panels(ALL["frame-queue.json"]) if p["title"].startswith("End-to-end latency"))
    defaults = item["fieldConfig"]["defaults"]
    assert {"color": "red", "value": 0.01} in defaults["thresholds"]["steps"]
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "line+area", "dashed")


def test_the_report_draws_the_dashboards_queries() -> None:
    """``frame-buffer report`` renders its panels from promql.py as the dashboard does: rendered with the
    dashboard's window and filters, each of its queries is one of the dashboard's, but for those that the
    dashboard does not show (a p90, and Redis memory summed over the instances where it shows each)."""
    from frame_buffer.commands.report.data import prometheus_panels
    from frame_buffer.promql import END_TO_END, Queries

    dashboard = Queries()
    not_on_the_dashboard = {dashboard.quantile(0.9, END_TO_END), dashboard.redis_memory_used_total(),
                            dashboard.redis_memory_max_total()}
    shown = {query.expr for query in queries("frame-queue.json", ALL["frame-queue.json"])}
    drawn = {query.expr for *_, panel_queries in prometheus_panels(dashboard) for query in panel_queries}
    assert drawn - not_on_the_dashboard <= shown, sorted(drawn - not_on_the_dashboard - shown)
    assert len(drawn - not_on_the_dashboard) == 13


def rows(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Row title -> the panels in that row."""
    found: dict[str, list[dict[str, Any]]] = {"": []}
    current = ""
    for item in dashboard["panels"]:
        if item["type"] == "row":
            current = item["title"]
            found[current] = list(item.get("panels", []))
        else:
            found[current].append(item)
    return found


def exprs(items: list[dict[str, Any]]) -> str:
    return "\n".join(target["expr"] for item in items for target in item["targets"])


def test_the_redis_cluster_row() -> None:
    """Cluster state, slots covered, masters without replica and role changes, from the exporter's metric
    names; all of them read redis_exporter's series only, so that the cluster stack runs every one."""
    dashboard = ALL["frame-queue.json"]
    cluster = rows(dashboard)[CLUSTER_ROW]
    titles = {item["title"] for item in cluster}
    assert {"Cluster state", "Slots covered", "Masters without replica", "Role by node", "Role changes",
            "Nodes"} <= titles
    text = exprs(cluster)
    for metric in ("redis_cluster_state", "redis_cluster_slots_ok", "redis_cluster_slots_fail",
                   "redis_connected_slaves", "redis_instance_info", "redis_up"):
        assert re.search(rf"\b{metric}\b", text), f"{metric} on no panel of the {CLUSTER_ROW} row"
    cluster_queries = [query for query in queries("frame-queue.json", dashboard) if query.cluster_only]
    assert {query.panel for query in cluster_queries} == titles
    assert all(query.redis_only for query in cluster_queries), [q for q in cluster_queries if not q.redis_only]
    slots = next(item for item in cluster if item["title"] == "Slots covered")
    assert slots["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "green", "value": 16384}


def test_a_row_per_redis_node() -> None:
    """A row repeated for each value of the redis variable: memory, ops/s, clients and role of that node."""
    dashboard = ALL["frame-queue.json"]
    repeated = [item for item in dashboard["panels"] if item["type"] == "row" and item.get("repeat")]
    assert [item["repeat"] for item in repeated] == ["redis"]
    node = rows(dashboard)[repeated[0]["title"]]
    read = {name for item in node for target in item["targets"] for name in metric_names(target["expr"])}
    assert {"redis_memory_used_bytes", "redis_commands_processed_total", "redis_connected_clients",
            "redis_instance_info"} <= read
    for item in node:
        for target in item["targets"]:
            assert 'instance=~"$redis"' in target["expr"], f"{item['title']}: not one node's: {target['expr']}"


def test_the_backlog_by_shard() -> None:
    """Lag, pending and their sum per group and shard, stream length per shard."""
    text = exprs(rows(ALL["frame-queue.json"])["Backlog by shard"])
    for gauge in ("frame_queue_consumer_lag", "frame_queue_pending"):
        assert re.search(rf"max by \(group, shard\) \({gauge}\b", text), gauge
    assert "max by (group, shard) (frame_queue_consumer_lag" in text and "+ frame_queue_pending" in text
    assert "max by (shard) (frame_queue_depth)" in text
