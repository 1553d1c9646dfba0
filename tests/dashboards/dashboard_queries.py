"""Reading the dashboards and alert rules of ``dashboards/`` the way Grafana and Prometheus do."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
#: Every dashboard file and the uid it must keep (links and the Ansible role refer to it).
STABLE_UIDS = {"frame-queue.json": "frame-queue"}
#: Grafana's built-in variables, as a 1 s scrape interval makes them (rate windows span 15 scrapes).
BUILTINS = {
    "__rate_interval": "15s",
    "__interval": "2s",
    "__interval_ms": "2000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
#: The row whose panels only a Redis Cluster fills (dashboards/generate.py): the standalone stack leaves them
#: out, the cluster stack runs them.
CLUSTER_ROW = "Redis Cluster"
#: The rule file whose alerts read series only a Redis Cluster exports.
CLUSTER_RULES = "redis-cluster.yml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


@dataclass(frozen=True)
class Query:
    """One target of one panel."""

    dashboard: str
    panel: str
    ref: str
    expr: str
    row: str = ""  # the title of the row the panel is in ("" above the first row)

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref}: {self.expr}"

    @property
    def cluster_only(self) -> bool:
        """A panel of the Redis Cluster row: no data from a standalone Redis."""
        return self.row == CLUSTER_ROW

    @property
    def redis_only(self) -> bool:
        """Every metric it reads comes from redis_exporter (none from the service)."""
        return all(name.startswith("redis_") for name in metric_names(self.expr))


def dashboards() -> dict[str, dict[str, Any]]:
    """Every ``dashboards/*.json`` by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for item in dashboard.get("panels", []):
        yield item
        yield from item.get("panels", [])


def queries(name: str, dashboard: Mapping[str, Any]) -> list[Query]:
    """Every Prometheus query of every panel, with the row it is in."""
    found, current = [], ""
    for item in dashboard.get("panels", []):
        row = item["title"] if item["type"] == "row" else ""
        for nested in item.get("panels", []):  # a collapsed row holds its panels
            found += [Query(name, nested["title"], t["refId"], t["expr"], row) for t in nested.get("targets", [])]
        if item["type"] == "row":
            current = row
            continue
        found += [Query(name, item["title"], t["refId"], t["expr"], current) for t in item.get("targets", [])]
    return found


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's template variables."""
    found: list[dict[str, Any]] = dashboard.get("templating", {}).get("list", [])
    return found


def variable_query(variable: Mapping[str, Any]) -> str:
    """The ``label_values(...)`` text of a query variable (string or object form)."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def referenced(text: str) -> set[str]:
    """Names of the variables that ``text`` refers to."""
    return {next(group for group in match.groups() if group) for match in _VARIABLE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace every variable reference by its value; KeyError names an unknown variable."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values[name]

    return _VARIABLE.sub(value, text)


_LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)\s*$")


def promql_regex_escape(value: str) -> str:
    """Escape a label value for a regex inside a PromQL string, as Grafana does (``.`` becomes ``\\\\.``)."""
    return re.sub(r"([$^*{}\[\]'+?.()|\\])", r"\\\\\1", value)


def needed_variables(dashboard: Mapping[str, Any], texts: Iterable[str]) -> set[str]:
    """The variables ``texts`` refer to, with the variables their own queries refer to."""
    queries_of = {variable["name"]: variable_query(variable) for variable in variables(dashboard)
                  if variable["type"] == "query"}
    needed: set[str] = set()
    todo = {name for text in texts for name in referenced(text)}
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo |= referenced(queries_of.get(name, ""))
    return needed


def resolve_variables(
    dashboard: Mapping[str, Any],
    label_values: Callable[[str, str], list[str]],
    only: set[str] | None = None,
) -> dict[str, str]:
    """Values for every variable (or for those of ``only``) as Grafana would send them with every value selected.

    ``label_values(label, match)`` asks Prometheus; a query variable without any value is a blind spot and
    raises ValueError. Multi-value variables become a regex alternation, which ``=~`` selectors accept.
    """
    values = dict(BUILTINS)
    for variable in variables(dashboard):
        name = variable["name"]
        if only is not None and name not in only:
            continue
        if variable["type"] == "datasource":
            values[name] = "prometheus"
            continue
        if variable["type"] != "query":
            raise ValueError(f"variable {name}: type {variable['type']} is not handled by this test")
        parsed = _LABEL_VALUES.match(substitute(variable_query(variable), values))
        if parsed is None:
            raise ValueError(f"variable {name}: only label_values(...) queries are handled")
        found = label_values(parsed["label"], parsed["match"] or "{__name__=~'.+'}")
        if not found:
            raise ValueError(f"variable {name}: {variable_query(variable)} has no values")
        values[name] = "|".join(promql_regex_escape(value) for value in sorted(found))
    return values


def rule_files() -> list[Path]:
    """The Prometheus rule files (``dashboards/alerts/*.yml``)."""
    return sorted((DASHBOARDS / "alerts").glob("*.yml"))


def rules_in(path: Path) -> list[dict[str, Any]]:
    """The alerting rules of one rule file."""
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def alert_rules(cluster: bool | None = None) -> list[dict[str, Any]]:
    """Every alerting rule of every rule file; ``cluster`` True or False: only those of :data:`CLUSTER_RULES`,
    or only the others."""
    return [
        rule
        for path in rule_files()
        if cluster is None or (path.name == CLUSTER_RULES) == cluster
        for rule in rules_in(path)
    ]


_PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges and groupings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {name for name in names if name.lower() not in _PROMQL_KEYWORDS}
