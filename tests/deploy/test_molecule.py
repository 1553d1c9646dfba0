"""``molecule test`` for every role on the local Docker engine: converge, idempotence, verify, destroy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import ROLES, ROOT, run


@pytest.mark.docker
@pytest.mark.timeout(900)
@pytest.mark.parametrize("role", ROLES)
def test_molecule(role: str, deploy_tools: Path, local_images: None, tmp_path: Path) -> None:
    out = run([deploy_tools / "molecule", "test"], tmp_path / f"molecule-{role}.log", cwd=ROOT / "roles" / role)
    assert "idempotence: Executed: Successful" in out, out[-3000:]
