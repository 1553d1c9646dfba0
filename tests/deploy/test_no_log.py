"""Secrets stay out of Ansible's output: every task that handles a secret has ``no_log: true``, and no other task
hides its output behind it.

A secret is a role variable whose argument spec says ``no_log: true`` (the passwords), or a ``vault_*`` variable
of an inventory. A task handles one when it refers to it in a Jinja expression (``{{ ... }}``, ``{% ... %}``, or
a bare condition: ``that``, ``when``, ``until``, ``changed_when``, ``failed_when``, ``var``), or renders a template
that does. ``diff: false`` alone is not enough: a failed ``docker_container`` task, or ``-v``, prints the module's
arguments, the container's environment with them.

One exception: an ``assert`` that only measures a secret (``<secret> | length``) prints the condition's text, never
the value, and ``no_log`` would hide its ``fail_msg``, the one line that tells an operator what to set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROLES, ROOT

#: Keys whose value is a Jinja expression without braces.
BARE_EXPRESSIONS = {"that", "when", "until", "changed_when", "failed_when", "var"}
#: Keys that hold further tasks rather than a module's arguments.
NESTED = {"block", "rescue", "always"}
#: Where a play keeps its tasks.
PLAY_SECTIONS = ("pre_tasks", "tasks", "post_tasks", "handlers")
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
ASSERTS = {"assert", "ansible.builtin.assert", "ansible.legacy.assert"}
TEMPLATES = {"template", "ansible.builtin.template", "ansible.legacy.template"}


def secret_variables() -> set[str]:
    """Every role option whose argument spec says ``no_log: true``."""
    names: set[str] = set()
    for role in ROLES:
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        for entry in specs.values():
            names |= {name for name, spec in entry.get("options", {}).items() if spec.get("no_log")}
    return names


SECRETS = secret_variables()
SECRET_NAME = re.compile(r"\b(vault_\w+|" + "|".join(sorted(map(re.escape, SECRETS))) + r")\b")


@dataclass(frozen=True)
class Task:
    """One task (never a block) of a task file, a handler file or a play, and the file it is in."""

    path: Path
    body: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(ROOT)}: {self.body.get('name', '(unnamed)')}"


def expressions(value: object, key: str = "") -> Iterator[str]:
    """The Jinja text in a task's values: inside braces, or a whole value under a key that takes a bare expression.
    Task names are prose."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            if child_key != "name":
                yield from expressions(child, str(child_key))
    elif isinstance(value, list):
        for child in value:
            yield from expressions(child, key)
    elif isinstance(value, str):
        yield from (value,) if key in BARE_EXPRESSIONS else JINJA.findall(value)


def tasks_in(path: Path, items: object) -> Iterator[Task]:
    """The tasks of a task list, blocks opened."""
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        nested = [key for key in NESTED if key in item]
        if nested:
            for key in nested:
                yield from tasks_in(path, item[key])
        else:
            yield Task(path, item)


def all_tasks() -> list[Task]:
    """Every task of the roles (tasks/, handlers/), of the playbooks, and of the molecule scenarios' playbooks."""
    found: list[Task] = []
    task_files = [*ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("roles/*/handlers/*.yml")]
    for path in sorted(task_files):
        found += tasks_in(path, yaml.safe_load(path.read_text()))
    play_files = [*ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/molecule/*/*.yml"), *ROOT.glob("molecule/*/*.yml")]
    for path in sorted(play_files):
        if path.name == "molecule.yml":
            continue  # the scenario's settings: its inventory holds test passwords, no task
        for play in yaml.safe_load(path.read_text()) or []:
            for section in PLAY_SECTIONS:
                found += tasks_in(path, play.get(section))
    return found


def module_of(task: Task) -> str:
    keywords = {"name", "vars", "when", "register", "loop", "loop_control", "no_log", "diff", "changed_when",
                "failed_when", "until", "retries", "delay", "notify", "tags", "become", "environment",
                "delegate_to", "run_once", "ignore_errors", "check_mode", "with_fileglob", "with_items", "args",
                "listen"}
    modules = [key for key in task.body if key not in keywords]
    return modules[0] if modules else ""


def referenced_secrets(task: Task) -> set[str]:
    """The secrets a task refers to, itself or through the template it renders."""
    found = {match for text in expressions(task.body) for match in SECRET_NAME.findall(text)}
    module = module_of(task)
    if module in TEMPLATES:
        src = str(task.body[module]["src"])
        role_dir = next(parent for parent in task.path.parents if parent.parent.name == "roles")
        template = role_dir / "templates" / src
        found |= {match for text in JINJA.findall(template.read_text()) for match in SECRET_NAME.findall(text)}
    return found


def only_measures(task: Task, secrets: set[str]) -> bool:
    """An assert that reads the secrets only as ``<secret> | length``."""
    if module_of(task) not in ASSERTS:
        return False
    text = "\n".join(expressions(task.body))
    return all(not re.search(rf"\b{name}\b(?!\s*\|\s*length\b)", text) for name in secrets)


def unprotected(task: Task) -> set[str]:
    """The secrets ``task`` handles without ``no_log: true``: none when it has it, or only measures them."""
    secrets = referenced_secrets(task)
    if not secrets or task.body.get("no_log") is True or only_measures(task, secrets):
        return set()
    return secrets


def test_secrets_are_known() -> None:
    """The list the checks below work from: every password variable of the roles."""
    assert {"redis_acl_admin_password", "redis_acl_frame_buffer_password", "redis_acl_exporter_password",
            "frame_buffer_redis_password", "redis_exporter_redis_password", "grafana_admin_password"} <= SECRETS


def test_every_task_that_handles_a_secret_has_no_log() -> None:
    tasks = all_tasks()
    assert len(tasks) > 50, "the task files were not found"
    missing = [f"{task.label} ({', '.join(sorted(secrets))})" for task in tasks if (secrets := unprotected(task))]
    assert not missing, "tasks that handle a secret without no_log: true:\n" + "\n".join(missing)


def test_no_task_hides_its_output_without_a_secret() -> None:
    hidden = [task.label for task in all_tasks() if task.body.get("no_log") and not referenced_secrets(task)]
    assert not hidden, "no_log on tasks that handle no secret (it hides useful output):\n" + "\n".join(hidden)


@pytest.mark.parametrize(
    ("body", "flagged"),
    [
        ({"community.docker.docker_container": {"env": {"P": "{{ grafana_admin_password }}"}}}, True),
        ({"community.docker.docker_container": {"env": {"P": "{{ grafana_admin_password }}"}}, "no_log": True},
         False),
        ({"ansible.builtin.assert": {"that": "grafana_admin_password | length > 0"}}, False),
        ({"ansible.builtin.assert": {"that": "grafana_admin_password == 'x'"}}, True),
        ({"ansible.builtin.debug": {"var": "vault_redis_password"}}, True),
        ({"ansible.builtin.debug": {"msg": "grafana_admin_password is prose here"}}, False),
    ],
)
def test_the_check_itself(body: dict[str, Any], flagged: bool) -> None:
    """The rule on small tasks: a reference in braces or a bare condition counts, prose does not."""
    assert bool(unprotected(Task(ROOT / "roles" / "grafana" / "tasks" / "main.yml", body))) is flagged
