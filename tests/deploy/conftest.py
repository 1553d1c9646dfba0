"""Fixtures of the deployment tests: the Ansible tools of the ``deploy`` extra, one local Docker engine and the
local images (scripts/docker-engine.sh, scripts/base-image.sh), and a runner that keeps each command's output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks" / "main.yml").exists())
DEPLOY_TOOLS = ("ansible-playbook", "ansible-lint", "yamllint", "molecule", "hadolint")


def tool_env() -> dict[str, str]:
    """The environment for Ansible and molecule: this venv first on PATH, no colours, the repo's ansible.cfg."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        PY_COLORS="0",
        NO_COLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
    )
    return env


def run(args: Sequence[str | Path], log: Path, cwd: Path = ROOT, timeout: float = 900) -> str:
    """Run a command to completion with its output in ``log``; fail the test with the output's tail if it fails."""
    with log.open("w") as out:
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=tool_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-80:])
        pytest.fail(f"{' '.join(map(str, args))} exited {proc.returncode} (full output: {log}):\n{tail}")
    return text


def unavailable(reason: str) -> None:
    """Skip for a user without the tooling; fail under ``make test``, which installs it (a skip there would hide a
    missing install step)."""
    if os.environ.get("FB_TEST_REQUIRE_DEPLOY") == "1":
        pytest.fail(f"deployment tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def deploy_tools() -> Path:
    """The venv's bin directory, once the ``deploy`` extra is known to be installed."""
    missing = [t for t in DEPLOY_TOOLS if not (BIN / t).exists()]
    if missing:
        unavailable(f"the deploy extra is not installed ({', '.join(missing)} missing): bash scripts/setup.sh --deploy")
    return BIN


@pytest.fixture(scope="session")
def docker_engine(deploy_tools: Path) -> None:
    """One local dockerd, started if none answers. Skipped only where no engine can run at all."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        unavailable("no Docker engine installed (docker.io): bash scripts/setup.sh --deploy")
    if os.geteuid() != 0:
        unavailable("starting dockerd and debootstrap need root")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-engine.sh")], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"scripts/docker-engine.sh failed:\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="session")
def local_images(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The debootstrap base and the Redis, exporter and Prometheus images (cached by content hash)."""
    if shutil.which("debootstrap") is None:
        unavailable("debootstrap is not installed: bash scripts/setup.sh --deploy")
    log = tmp_path_factory.mktemp("images") / "base-image.log"
    # The service image is built by the frame_buffer role itself (tag :deploy), as on nebula.
    run(
        ["bash", ROOT / "scripts" / "base-image.sh", "base", "redis", "redis_exporter", "prometheus"], log, timeout=1200
    )
