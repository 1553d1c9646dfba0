"""The prometheus role's second mode: configuration dropped into an existing Prometheus, reloaded, no container.

The "existing Prometheus" is Debian's prometheus binary started by the test on a free port.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.dashboards.stack import render_role_config
from tests.deploy.conftest import ROOT, run, tool_env, unavailable
from tests.servers import free_port, wait_until


@pytest.fixture
def existing_prometheus(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A running Prometheus with --web.enable-lifecycle whose configuration directory the role will own."""
    if shutil.which("prometheus") is None:
        unavailable("Debian's prometheus is not installed: bash scripts/setup.sh")
    config_dir, port = tmp_path / "etc", free_port()
    config_dir.mkdir()
    (config_dir / "prometheus.yml").write_text("global: {scrape_interval: 15s}\n")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config_dir / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2).status == 200,
                   60, "the existing Prometheus")
        yield config_dir, port
    finally:
        process.terminate()
        process.wait(30)


def rule_groups(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as response:
        return sorted(group["name"] for group in json.load(response)["data"]["groups"])


def test_role_drops_config_and_rules_into_an_existing_prometheus_and_reloads_it(
    deploy_tools: Path, existing_prometheus: tuple[Path, int], tmp_path: Path
) -> None:
    config_dir, port = existing_prometheus
    assert rule_groups(port) == []
    playbook = tmp_path / "existing.yml"
    playbook.write_text(json.dumps([{
        "name": "Configure an existing Prometheus", "hosts": "localhost", "connection": "local",
        "gather_facts": False, "roles": [{"role": str(ROOT / "roles" / "prometheus")}],
        "vars": {
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "prometheus_deploy_container": False, "prometheus_config_dir": str(config_dir),
            "prometheus_alert_rules_dir": str(ROOT / "dashboards" / "alerts"),
            "prometheus_reload_url": f"http://127.0.0.1:{port}/-/reload",
            "prometheus_redis_exporter_targets": ["127.0.0.1:1"], "prometheus_frame_buffer_targets": ["127.0.0.1:2"],
        },
    }]))
    command: list[str | Path] = [deploy_tools / "ansible-playbook", "-i", "localhost,", playbook]
    first = run(command, tmp_path / "first.log")
    assert "changed=0" not in first.split("PLAY RECAP")[-1]
    expected = sorted(
        group["name"] for path in (ROOT / "dashboards" / "alerts").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
    )
    wait_until(lambda: rule_groups(port) == expected, 30, f"the reloaded Prometheus to load the rule groups {expected}")
    second = run(command, tmp_path / "second.log")
    assert "changed=0" in second.split("PLAY RECAP")[-1], "a second run changed something"
    promtool = subprocess.run(["promtool", "check", "config", str(config_dir / "prometheus.yml")],
                              capture_output=True, text=True, check=False)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr


@pytest.mark.parametrize("target", ["redis://:s3cret@10.0.0.1:6379", "10.0.0.1:6379", "redis://10.0.0.1"])
def test_role_refuses_a_redis_node_it_cannot_scrape_safely(deploy_tools: Path, tmp_path: Path, target: str) -> None:
    """A node with credentials in its address (they would be a label and a URL on the targets page), without
    a scheme or without a port: the role stops at its check, writes nothing and does not echo the password."""
    config_dir = tmp_path / "etc"
    playbook = tmp_path / "refused.yml"
    playbook.write_text(json.dumps([{
        "name": "Configure Prometheus for a Redis Cluster", "hosts": "localhost", "connection": "local",
        "gather_facts": False, "roles": [{"role": str(ROOT / "roles" / "prometheus")}],
        "vars": {
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "prometheus_deploy_container": False, "prometheus_config_dir": str(config_dir),
            "prometheus_redis_targets": ["redis://10.0.0.2:6379", target],
        },
    }]))
    done = subprocess.run([str(deploy_tools / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                          cwd=ROOT, env=tool_env(), capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "prometheus_redis_targets must be redis://host:port" in output, output
    assert "s3cret" not in output
    assert not config_dir.exists()


def test_role_renders_every_redis_node_as_the_dashboard_tests_do(
    deploy_tools: Path, existing_prometheus: tuple[Path, int], tmp_path: Path
) -> None:
    """With prometheus_redis_targets, Ansible writes the scrape jobs that tests/dashboards renders from the same
    template for its cluster stack (where they run against a real exporter and cluster), and Prometheus loads
    them: one target per node, scraped through the exporter's /scrape endpoint."""
    config_dir, port = existing_prometheus
    nodes = [f"redis://127.0.0.1:{7000 + index}" for index in range(6)]
    variables = {
        "prometheus_config_dir": str(config_dir), "prometheus_deploy_container": False,
        "prometheus_redis_targets": nodes, "prometheus_redis_exporter_targets": ["127.0.0.1:1"],
        "prometheus_frame_buffer_targets": ["127.0.0.1:2"],
    }
    playbook = tmp_path / "cluster.yml"
    playbook.write_text(json.dumps([{
        "name": "Configure an existing Prometheus for a Redis Cluster", "hosts": "localhost", "connection": "local",
        "gather_facts": False, "roles": [{"role": str(ROOT / "roles" / "prometheus")}],
        "vars": {
            **variables,
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "prometheus_alert_rules_dir": str(ROOT / "dashboards" / "alerts"),
            "prometheus_reload_url": f"http://127.0.0.1:{port}/-/reload",
        },
    }]))
    run([deploy_tools / "ansible-playbook", "-i", "localhost,", playbook], tmp_path / "cluster.log")
    written = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    assert written["scrape_configs"] == render_role_config(**variables)["scrape_configs"]

    def redis_targets() -> list[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as response:
            active = json.load(response)["data"]["activeTargets"]
        return sorted(target["labels"]["instance"] for target in active if target["labels"]["job"] == "redis")

    expected = sorted(node.removeprefix("redis://") for node in nodes)
    wait_until(lambda: redis_targets() == expected, 30, f"the reloaded Prometheus to scrape {expected}")
