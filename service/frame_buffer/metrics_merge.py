"""Adding up the ``/metrics`` of several processes into one exposition: the parent of worker processes serves it.

Why the parent adds them up rather than prometheus_client's multiprocess mode: that mode needs
``PROMETHEUS_MULTIPROC_DIR`` set before any metric is created, a directory of mmap files that must be wiped at
every start, a mode for every gauge and its own collector in every process; and it cannot tell the children's
``thread`` labels apart. Here each child serves its own registry on loopback, the parent reads it (parsed with
prometheus_client's own parser) and adds counters, histograms and summaries sample by sample; gauges (queue
depth, buffer, breaker, readiness) are the parent's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

#: Metric types whose samples are added across processes (gauges are not: the parent's own are served).
ADDED_TYPES = frozenset({"counter", "histogram", "summary"})

Families = list[Metric]


def parse(text: str, thread_prefix: str = "") -> Families:
    """The families of an exposition, added-up types only; ``thread`` labels get ``thread_prefix`` in front."""
    families: Families = []
    for family in text_string_to_metric_families(text):
        if family.type not in ADDED_TYPES:
            continue
        if thread_prefix:
            family.samples = [_prefixed(sample, thread_prefix) for sample in family.samples]
        families.append(family)
    return families


def _prefixed(sample: Sample, prefix: str) -> Sample:
    if "thread" not in sample.labels:
        return sample
    return sample._replace(labels={**sample.labels, "thread": prefix + sample.labels["thread"]})


def add(base: Iterable[Metric], *others: Iterable[Metric]) -> Families:
    """``base`` with the added-up types of ``others`` added sample by sample (new series and families appended)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source_index, source in enumerate((base, *others)):
        for family in source:
            if source_index and family.type not in ADDED_TYPES:
                continue
            if family.name not in merged:
                merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                series[key] = series.get(key, 0.0) + sample.value
    for name, family in merged.items():
        family.samples = [Sample(sample_name, dict(labels), value) for (sample_name, labels), value
                          in values[name].items()]
    return list(merged.values())


class _Families:
    def __init__(self, families: Families) -> None:
        self.families = families

    def collect(self) -> Families:
        return self.families

    def describe(self) -> list[Any]:
        return []


def exposition(families: Families) -> bytes:
    """The Prometheus text format of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


def own(registry: CollectorRegistry) -> Families:
    """The families of this process's registry, gauges included."""
    return list(registry.collect())
