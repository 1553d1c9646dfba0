"""What ``frame-buffer report`` draws: the dashboard's key panels fetched from a Prometheus, or the rows of a
``frame-buffer bench --json`` run.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frame_buffer.errors import EXIT_UNREACHABLE, FrameBufferError
from frame_buffer.metrics import STAGES
from frame_buffer.promql import END_TO_END, PUBLISH_DURATION, Queries

#: The end-to-end latency target, drawn as a line on the latency panel.
LATENCY_TARGET_MS = 10.0


@dataclass
class Series:
    """One line of a panel: a legend and its points (unix seconds, value)."""

    legend: str
    times: list[float]
    values: list[float]


@dataclass
class Panel:
    """One chart: its lines, the unit shown on the y axis and an optional target line."""

    title: str
    unit: str
    series: list[Series] = field(default_factory=list)
    target: float | None = None
    log: bool = False


@dataclass(frozen=True)
class PanelQuery:
    """A query of a panel: PromQL, a legend template and a scale factor."""

    expr: str
    legend: str
    scale: float = 1.0


def prometheus_panels(q: Queries) -> list[tuple[str, str, float | None, list[PanelQuery]]]:
    """Title, unit, target and queries of each panel: the dashboard's expressions (``promql.py``) as ``q``
    renders them. Memory is summed over the Redis instances here, where the dashboard shows each; the stages'
    p50 and p99, on one dashboard panel, are two panels here (six lines each)."""
    return [
        (
            "Throughput",
            "frames/s",
            None,
            [
                PanelQuery(q.published(), "published"),
                PanelQuery(q.consumed(by="group"), "consumed {group}"),
                PanelQuery(q.acked(by="group"), "acked {group}"),
            ],
        ),
        (
            "Latency",
            "ms",
            LATENCY_TARGET_MS,
            [
                PanelQuery(q.quantile(0.5, END_TO_END), "end-to-end p50", 1000),
                PanelQuery(q.quantile(0.9, END_TO_END), "end-to-end p90", 1000),
                PanelQuery(q.quantile(0.99, END_TO_END), "end-to-end p99", 1000),
                PanelQuery(q.quantile(0.99, PUBLISH_DURATION), "publish p99", 1000),
            ],
        ),
        (
            "Where the time goes: p50",
            "ms",
            None,
            [PanelQuery(q.stage_quantile(0.5), "{stage}", 1000)],
        ),
        (
            "Where the time goes: p99",
            "ms",
            None,
            [PanelQuery(q.stage_quantile(0.99), "{stage}", 1000)],
        ),
        (
            "Backlog",
            "entries",
            None,
            [
                PanelQuery(q.depth(), "queue depth"),
                PanelQuery(q.by_group("frame_queue_consumer_lag"), "lag {group}"),
                PanelQuery(q.by_group("frame_queue_pending"), "pending {group}"),
            ],
        ),
        (
            "Memory",
            "MB",
            None,
            [
                PanelQuery(q.redis_memory_used_total(), "Redis used", 1e-6),
                PanelQuery(q.redis_memory_max_total(), "Redis maxmemory", 1e-6),
                PanelQuery(q.total("frame_queue_buffer_bytes"), "buffer", 1e-6),
                PanelQuery(q.total("frame_queue_spool_bytes"), "spool", 1e-6),
            ],
        ),
    ]


class PrometheusError(FrameBufferError, RuntimeError):
    """Prometheus could not be reached or refused a query."""

    exit_code = EXIT_UNREACHABLE


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    """``/api/v1/query_range``; the matrix result."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=30) as reply:
            body = json.load(reply)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"cannot query {url}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"{expr}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def from_prometheus(
    url: str, range_s: float, step_s: float | None, window_s: float | None, end: float | None = None
) -> list[Panel]:
    """Fetch every panel's series over the last ``range_s`` seconds."""
    end = time.time() if end is None else end
    step = step_s or max(1.0, range_s / 240)
    # Every camera, group and Redis instance: no filters.
    q = Queries(window=f"{int(window_s or max(4 * step, 30))}s", filters={})
    panels = []
    for title, unit, target, queries in prometheus_panels(q):
        panel = Panel(title, unit, target=target, log=unit == "ms")  # latencies span decades
        for query in queries:
            for item in query_range(url, query.expr, end - range_s, end, step):
                labels = item["metric"]
                points = [(float(t), float(v) * query.scale) for t, v in item["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if points:
                    legend = query.legend.format_map(_Default(labels)).strip()
                    panel.series.append(Series(legend, [t for t, _ in points], [v for _, v in points]))
        panels.append(panel)
    return panels


def stage_breakdown(panels: list[Panel]) -> list[tuple[str, float | None, float | None]]:
    """``(stage, p50 ms, p99 ms)`` at the end of the range, from the two stage panels, in path order."""
    latest: dict[str, dict[str, float]] = {}
    for panel in panels:
        if panel.title.startswith("Where the time goes: "):
            quantile = panel.title.rsplit(" ", 1)[1]
            for series in panel.series:
                latest.setdefault(series.legend, {})[quantile] = series.values[-1]
    return [(stage, values.get("p50"), values.get("p99")) for stage, values in sorted(latest.items(), key=_path_order)]


def _path_order(item: tuple[str, dict[str, float]]) -> tuple[int, str]:
    return (STAGES.index(item[0]) if item[0] in STAGES else len(STAGES), item[0])


class _Default(dict[str, str]):
    """Label lookup for legends: a missing label renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def load_bench(path: Path) -> dict[str, Any]:
    """The JSON object of a bench run: the file itself, or its last line that is JSON with ``rows``."""
    text = path.read_text()
    for candidate in [text, *reversed(text.splitlines())]:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            return data
    raise ValueError(f"{path}: no JSON object with 'rows' (the output of frame-buffer bench --json)")
