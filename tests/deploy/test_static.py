"""Static checks of the Ansible half: linters with zero findings, argument specs that match the defaults,
hadolint on the service Dockerfile, the vault file encrypted, the playbooks parse against both inventories.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROLES, ROOT, run

# The Ansible half: the roles, their shared molecule playbooks, the playbooks and the inventories.
ANSIBLE = ["roles", "molecule", "playbooks", "inventory"]
LINTED = [*ANSIBLE, ".yamllint", ".ansible-lint"]


def test_roles_found() -> None:
    assert ROLES == ["frame_buffer", "grafana", "prometheus", "redis", "redis_exporter"]


def test_yamllint(deploy_tools: Path, tmp_path: Path) -> None:
    run([deploy_tools / "yamllint", "--strict", *LINTED], tmp_path / "yamllint.log")


def test_ansible_lint_production(deploy_tools: Path, tmp_path: Path) -> None:
    out = run(
        [deploy_tools / "ansible-lint", "--profile", "production", "--offline", *ANSIBLE],
        tmp_path / "ansible-lint.log",
        timeout=600,
    )
    assert "0 failure(s), 0 warning(s)" in out, out[-2000:]


def test_hadolint_service_dockerfile(deploy_tools: Path, tmp_path: Path) -> None:
    run([deploy_tools / "hadolint", "service/Dockerfile"], tmp_path / "hadolint.log")


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role: str) -> None:
    """Every default is specified with the same default value, and every specified option has a default."""
    base = ROOT / "roles" / role
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options: dict[str, dict[str, object]] = {}
    for entry in specs.values():
        for name, spec in entry["options"].items():
            assert name not in options, f"{name} specified in two entry points"
            options[name] = spec
    assert sorted(options) == sorted(defaults), f"{role}: specs and defaults differ"
    for name, value in defaults.items():
        assert name.startswith(f"{role}_"), f"{name} is not prefixed with the role name"
        assert "default" in options[name], f"{name} has no default in the spec"
        assert options[name]["default"] == value, f"{name}: spec default {options[name]['default']!r} != {value!r}"
        assert options[name].get("description"), f"{name} has no description"


def test_nebula_vault_is_encrypted() -> None:
    vault = ROOT / "inventory" / "nebula" / "group_vars" / "all" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256"), "vault.yml must stay encrypted"
    plain = (ROOT / "inventory" / "nebula" / "group_vars" / "all" / "main.yml").read_text()
    assert "vault_redis_password" in plain and "vault_grafana_admin_password" in plain


@pytest.mark.parametrize("inventory", ["local", "local-cluster", "multi-host-example"])
@pytest.mark.parametrize("playbook", ["site.yml", "verify.yml"])
def test_playbooks_parse(deploy_tools: Path, tmp_path: Path, playbook: str, inventory: str) -> None:
    run(
        [deploy_tools / "ansible-playbook", "--syntax-check", "-i", f"inventory/{inventory}", f"playbooks/{playbook}"],
        tmp_path / "syntax.log",
    )
