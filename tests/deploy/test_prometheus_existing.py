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

from tests.deploy.conftest import ROOT, run, unavailable
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
    command = [deploy_tools / "ansible-playbook", "-i", "localhost,", playbook]
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
