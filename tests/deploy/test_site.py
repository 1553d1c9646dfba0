"""End to end: ``playbooks/site.yml`` against ``inventory/local`` (in check mode first, which must leave the host
alone; then twice, the second run changing nothing), then ``playbooks/verify.yml`` with every acceptance check of
issue 6, on the local Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import run

STATE_DIR = Path("/var/lib/frame-buffer-local")  # local_state_dir of inventory/local


def _remove_local_deployment() -> None:
    """Remove what inventory/local deploys: containers fb-local-*, volumes fb_local_*, its state directory."""

    def ids(*args: str) -> list[str]:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
        return out.split()

    containers = ids("ps", "-aq", "--filter", "name=^fb-local-")
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=True)
    volumes = ids("volume", "ls", "-q", "--filter", "name=^fb_local_")
    if volumes:
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, check=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)


@pytest.fixture
def clean_local_deployment(local_images: None) -> Iterator[None]:
    _remove_local_deployment()
    yield
    _remove_local_deployment()


def changed_counts(output: str) -> dict[str, int]:
    """changed=N per host from every PLAY RECAP line of an ansible-playbook run."""
    counts: dict[str, int] = {}
    for host, changed in re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, flags=re.MULTILINE):
        counts[host] = counts.get(host, 0) + int(changed)
    return counts


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_site_then_verify(deploy_tools: Path, clean_local_deployment: None, tmp_path: Path) -> None:
    playbook = [deploy_tools / "ansible-playbook", "-i", "inventory/local"]
    run([*playbook, "playbooks/site.yml", "--check", "--diff"], tmp_path / "site-check.log")
    created = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "name=^fb-local-"], capture_output=True, text=True, check=True
    ).stdout
    assert not created.strip() and not STATE_DIR.exists(), "--check changed the host"

    first = run([*playbook, "playbooks/site.yml"], tmp_path / "site-1.log")
    assert changed_counts(first).get("local", 0) > 0

    second = run([*playbook, "playbooks/site.yml"], tmp_path / "site-2.log")
    assert changed_counts(second) == {"local": 0}, "second run of site.yml changed something:\n" + "\n".join(
        line for line in second.splitlines() if line.startswith("changed:") or "TASK [" in line
    )

    out = run([*playbook, "playbooks/verify.yml"], tmp_path / "verify.log")
    assert re.search(r"Redis did \d+ ops/s under load", out), out[-3000:]
    assert (STATE_DIR / "grafana" / "dashboards" / "frame-queue.json").exists()
