"""``molecule test`` for every scenario of every role on the local Docker engine: converge, idempotence, verify,
destroy. Every role has ``default``; the redis role also has ``cluster`` (redis_mode cluster, six nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.conftest import ROLES, ROOT, run

#: (role, scenario) for every roles/<role>/molecule/<scenario>/molecule.yml.
SCENARIOS = sorted(
    (role, path.parent.name) for role in ROLES for path in (ROOT / "roles" / role / "molecule").glob("*/molecule.yml")
)


def test_every_role_has_a_default_scenario() -> None:
    assert {role for role, scenario in SCENARIOS if scenario == "default"} == set(ROLES)
    assert ("redis", "cluster") in SCENARIOS


@pytest.mark.docker
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("role", "scenario"), SCENARIOS, ids=[f"{r}-{s}" for r, s in SCENARIOS])
def test_molecule(role: str, scenario: str, deploy_tools: Path, local_images: None, tmp_path: Path) -> None:
    out = run(
        [deploy_tools / "molecule", "test", "-s", scenario],
        tmp_path / f"molecule-{role}-{scenario}.log",
        cwd=ROOT / "roles" / role,
    )
    assert "idempotence: Executed: Successful" in out, out[-3000:]
