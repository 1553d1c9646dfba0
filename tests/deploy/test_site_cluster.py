"""End to end in cluster mode: ``playbooks/site.yml`` against ``inventory/local-cluster`` (check mode first, which
must leave the host alone; then twice, the second run changing nothing), then ``playbooks/verify.yml``: the
cluster's state, slots and replicas, every node's settings, and the failover drill.

The service runs in cluster mode (16 shard streams, FRAME_BUFFER_REDIS_REPLICA_ACKS 1); verify.yml reads XINFO
of every shard stream from inside its container. Names ``fb-lcluster-*`` / ``fb_lcluster_*``: this test and
test_site.py (``fb-local-*``) leave each other's deployment alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import run
from tests.deploy.test_site import changed_counts

STATE_DIR = Path("/var/lib/frame-buffer-local-cluster")  # local_state_dir of inventory/local-cluster
INVENTORY = "inventory/local-cluster"
FORM = "redis : Form the cluster (once, when no node belongs to one yet)"


def _docker_ids(*args: str) -> list[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
    return out.split()


def _remove_cluster_deployment() -> None:
    """Remove what inventory/local-cluster deploys: containers fb-lcluster-*, volumes fb_lcluster_*, its state."""
    containers = _docker_ids("ps", "-aq", "--filter", "name=^fb-lcluster-")
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=True)
    volumes = _docker_ids("volume", "ls", "-q", "--filter", "name=^fb_lcluster_")
    if volumes:
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, check=True)
    shutil.rmtree(STATE_DIR, ignore_errors=True)


def task_status(output: str, task: str) -> str:
    """The first status word (ok, changed, skipping, ...) printed under ``TASK [<task>]`` in an ansible-playbook run."""
    match = re.search(rf"^TASK \[{re.escape(task)}\].*?^(ok|changed|skipping|fatal|failed):", output, flags=re.M | re.S)
    assert match, f"task {task!r} not in the output"
    return match.group(1)


@pytest.fixture
def clean_cluster_deployment(local_images: None) -> Iterator[None]:
    _remove_cluster_deployment()
    yield
    _remove_cluster_deployment()


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_cluster_site_then_verify(deploy_tools: Path, clean_cluster_deployment: None, tmp_path: Path) -> None:
    playbook = [deploy_tools / "ansible-playbook", "-i", INVENTORY]
    run([*playbook, "playbooks/site.yml", "--check", "--diff"], tmp_path / "site-check.log")
    assert not _docker_ids("ps", "-aq", "--filter", "name=^fb-lcluster-"), "--check created containers"
    assert not STATE_DIR.exists(), "--check wrote the state directory"

    first = run([*playbook, "playbooks/site.yml"], tmp_path / "site-1.log")
    assert changed_counts(first).get("local", 0) > 0
    assert task_status(first, FORM) == "changed"
    assert len(_docker_ids("ps", "-q", "--filter", "name=^fb-lcluster-redis-[0-9]+$")) == 6

    second = run([*playbook, "playbooks/site.yml"], tmp_path / "site-2.log")
    assert task_status(second, FORM) == "skipping"
    assert changed_counts(second) == {"local": 0}, "second run of site.yml changed something:\n" + "\n".join(
        line for line in second.splitlines() if line.startswith("changed:") or "TASK [" in line
    )

    out = run([*playbook, "playbooks/verify.yml"], tmp_path / "verify.log")
    assert "cluster_state:ok, 16384 slots, 6 nodes, 3 masters" in out, out[-3000:]
    # min-replicas-to-write 1 with one replica per master: the promoted replica refuses writes until the old
    # master is back as its replica, then accepts them.
    assert "while the old master is down: NOREPLICAS" in out, out[-3000:]
    assert "TASK [redis : Write again, now that the new master has its replica]" in out
