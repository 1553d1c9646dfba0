"""The prometheus role's scrape configuration, rendered from its template as its task does: unchanged for a
standalone Redis, one target per node through redis_exporter's /scrape endpoint for a cluster, valid for
promtool either way. test_cluster_no_blind_spots.py runs the cluster's against a real exporter and cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.dashboards.stack import DASHBOARDS, render_role_config, tool

NODES = ["redis://redis-node-1:6379", "redis://redis-node-2:6380", "rediss://10.0.0.3:6379"]


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_a_standalone_deployment_renders_the_scrape_jobs_of_before() -> None:
    """No prometheus_redis_targets: the job redis scrapes the exporter's /metrics, as it always did."""
    rendered = jobs(render_role_config())
    assert rendered == {
        "redis": {"job_name": "redis", "static_configs": [{"targets": ["redis_exporter:9121"]}]},
        "frame-buffer": {"job_name": "frame-buffer", "static_configs": [{"targets": ["frame_buffer:8080"]}]},
    }
    reference = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    assert rendered.keys() == jobs(reference).keys()


def test_a_cluster_renders_one_target_per_node_through_the_exporter() -> None:
    """Every node a target of the job redis, scraped at the exporter's /scrape?target=<node>, labelled with the
    node's host:port."""
    redis = jobs(render_role_config(prometheus_redis_targets=NODES))["redis"]
    assert redis["metrics_path"] == "/scrape"
    assert redis["static_configs"] == [{"targets": NODES}]
    assert redis["relabel_configs"] == [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "regex": "rediss?://(.+)", "target_label": "instance"},
        {"target_label": "__address__", "replacement": "redis_exporter:9121"},
    ]


def test_promtool_accepts_both(tmp_path: Path) -> None:
    """The rendered files pass promtool check config (with the repository's rule files)."""
    for name, variables in (("standalone", {}), ("cluster", {"prometheus_redis_targets": NODES})):
        config = render_role_config(**variables)
        config["rule_files"] = [str(DASHBOARDS / "alerts" / "*.yml")]
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, f"{name}:\n{done.stdout}\n{done.stderr}"
