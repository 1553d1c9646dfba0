#!/usr/bin/env python3
"""Generate the Grafana dashboards of this directory from Python.

Run ``python dashboards/generate.py`` after editing and commit both this file and its output;
``--check`` exits 1 when a committed JSON file differs from what this script generates (a test does that).
The PromQL comes from ``service/frame_buffer/promql.py``, which ``frame-buffer report`` renders too: this
script takes it from the checkout it sits in, so run it with the project's environment (importing the
``frame_buffer`` package needs its dependencies).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "service"))  # this checkout's package, not whichever is installed

from frame_buffer.promql import END_TO_END, PUBLISH_DURATION, Queries  # noqa: E402

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: The end-to-end latency target, drawn as a threshold line on the latency panels.
LATENCY_TARGET_S = 0.01
#: The expressions rendered with Grafana's $__rate_interval and the dashboard's variables as filters.
Q = Queries()

Panel = dict[str, Any]


def target(expr: str, legend: str = "__auto", ref: str = "A") -> dict[str, Any]:
    """One Prometheus query of a panel."""
    return {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend, "range": True}


def panel(
    title: str,
    queries: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 8,
    height: int = 8,
    description: str = "",
    thresholds: list[tuple[str, float | None]] | None = None,
    threshold_line: bool = False,
    mappings: list[dict[str, Any]] | None = None,
    stack: bool = False,
    log_scale: bool = False,
) -> Panel:
    """A panel whose queries are ``(expr, legend)`` pairs; positions are assigned by :func:`layout`."""
    steps = [{"color": color, "value": value} for color, value in (thresholds or [("green", None)])]
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "mappings": mappings or [],
        "color": {"mode": "thresholds" if kind == "stat" else "palette-classic"},
    }
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line+area" if threshold_line else "off"},
        }
        if log_scale:  # stages span 50 us to seconds: a linear axis shows only the slowest one
            defaults["custom"]["scaleDistribution"] = {"type": "log", "log": 10}
    options: dict[str, Any]
    if kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "textMode": "auto",
        }
    elif kind == "state-timeline":
        options = {"showValue": "auto", "mergeValues": True, "legend": {"displayMode": "list"}}
    else:
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    refs = "ABCDEFGH"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [target(expr, legend, refs[i]) for i, (expr, legend) in enumerate(queries)],
    }


def row(title: str) -> Panel:
    """A row header; the panels after it belong to it."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
        "panels": [],
    }


def layout(panels: list[Panel]) -> list[Panel]:
    """Give every panel a unique id and a grid position, left to right, top to bottom."""
    x = y = line_height = 0
    for number, item in enumerate(panels, start=1):
        item["id"] = number
        pos = item["gridPos"]
        if item["type"] == "row" or x + pos["w"] > 24:
            x, y, line_height = 0, y + line_height, 0
        pos["x"], pos["y"] = x, y
        x += pos["w"]
        line_height = max(line_height, pos["h"])
        if item["type"] == "row":
            x, y, line_height = 0, y + 1, 0
    return panels


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    """A multi-value template variable filled from a label's values, with an 'All' option."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
    }


def templating() -> dict[str, Any]:
    """The data source variable first, then the label filters."""
    datasource = {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "regex": "",
        "refresh": 1,
        "hide": 0,
        "current": {},
    }
    return {
        "list": [
            datasource,
            query_variable("camera", "Camera", "label_values(frame_queue_published_total, camera)"),
            query_variable("group", "Consumer group", "label_values(frame_queue_consumer_lag, group)"),
            query_variable("redis", "Redis", "label_values(redis_up, instance)"),
            query_variable("stream", "Stream", 'label_values(redis_stream_length{instance=~"$redis"}, stream)'),
        ]
    }


BREAKER_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half-open", "color": "orange", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]
READY_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "not ready", "color": "red", "index": 0},
            "1": {"text": "ready", "color": "green", "index": 1},
        },
    }
]
AOF_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "failing", "color": "red", "index": 0},
            "1": {"text": "ok", "color": "green", "index": 1},
        },
    }
]
LATENCY_THRESHOLDS: list[tuple[str, float | None]] = [("green", None), ("red", LATENCY_TARGET_S)]


def frame_queue_panels() -> list[Panel]:
    """Every panel of the ``frame-queue`` dashboard, in display order."""
    e2e, pub = END_TO_END, PUBLISH_DURATION
    return [
        row("Overview"),
        panel(
            "Published",
            [(Q.published(), "frames/s")],
            kind="stat",
            unit="fps",
            width=4,
            height=4,
        ),
        panel(
            "Acked",
            [(Q.acked(), "frames/s")],
            kind="stat",
            unit="fps",
            width=4,
            height=4,
        ),
        panel("Queue depth", [(Q.depth(), "entries")], kind="stat", width=4, height=4),
        panel(
            "p99 end-to-end",
            [(Q.quantile(0.99, e2e), "p99")],
            kind="stat",
            unit="s",
            width=4,
            height=4,
            thresholds=LATENCY_THRESHOLDS,
        ),
        panel(
            "Breaker",
            [(Q.breaker_state(), "state")],
            kind="stat",
            width=4,
            height=4,
            mappings=BREAKER_MAPPINGS,
            thresholds=[("green", None), ("orange", 1), ("red", 2)],
        ),
        panel(
            "Ready",
            [(Q.ready(), "ready")],
            kind="stat",
            width=4,
            height=4,
            mappings=READY_MAPPINGS,
            thresholds=[("red", None), ("green", 1)],
        ),
        row("Throughput"),
        panel(
            "Publish rate by camera",
            [(Q.published(by="camera"), "{{camera}}")],
            unit="fps",
            description="Frames accepted by the queue backend.",
        ),
        panel(
            "Consume and ack rate by group",
            [
                (Q.consumed(by="group"), "consumed {{group}}"),
                (Q.acked(by="group"), "acked {{group}}"),
            ],
            unit="fps",
        ),
        panel(
            "Redeliveries and publish errors",
            [
                (
                    Q.redelivered(),
                    "redelivered {{group}}",
                ),
                (Q.publish_errors(), "publish errors"),
            ],
            unit="ops",
            description="Deliveries after the first (retries, reclaimed frames of dead consumers).",
        ),
        row("Backlog"),
        panel("Queue depth", [(Q.depth(), "stream length")], unit="short", width=6),
        panel(
            "Consumer lag",
            [(Q.by_group("frame_queue_consumer_lag"), "{{group}}")],
            width=6,
            description="Entries not yet delivered to the group.",
        ),
        panel(
            "Pending",
            [(Q.by_group("frame_queue_pending"), "{{group}}")],
            width=6,
            description="Entries delivered but not yet acknowledged.",
        ),
        panel(
            "Oldest pending entry",
            [(Q.oldest_by_group(), "{{group}}")],
            unit="s",
            width=6,
            thresholds=[("green", None), ("red", 120)],
            threshold_line=True,
        ),
        row("Latency"),
        panel(
            "End-to-end latency (capture to handler)",
            [
                (Q.quantile(0.5, e2e), "p50"),
                (Q.quantile(0.99, e2e), "p99"),
            ],
            unit="s",
            width=12,
            thresholds=LATENCY_THRESHOLDS,
            threshold_line=True,
            description="The red line is the 10 ms target.",
        ),
        panel("Publish duration", [(Q.quantile(0.5, pub), "p50"), (Q.quantile(0.99, pub), "p99")], unit="s", width=12),
        panel(
            "Where the time goes",
            [(Q.stage_quantile(0.5), "p50 {{stage}}"), (Q.stage_quantile(0.99), "p99 {{stage}}")],
            unit="s",
            width=24,
            height=9,
            log_scale=True,
            description="frame_queue_stage_seconds, p50 and p99 of each stage of the service path: buffer "
            "(admitted to the buffer -> the publisher takes it), publish (taken -> the backend stored it), "
            "capture_to_receive (the frame's capture ts -> a consumer received it, wall clock; includes buffer "
            "and publish), decode, handler, ack (the batch's ack call). docs/observability.md has the details.",
        ),
        row("Losses"),
        panel(
            "Drops by reason",
            [(Q.dropped(), "{{reason}}")],
            description="Frames discarded by the drop policy or the spool limit.",
            stack=True,
        ),
        panel(
            "Dead-lettered by reason",
            [
                (Q.dead_lettered(), "{{reason}}"),
            ],
            stack=True,
        ),
        panel(
            "Dead-letter queue, source gaps, thread restarts",
            [
                (Q.dead_letter_depth(), "dead-letter depth"),
                (Q.source_gaps(), "gaps {{camera}}"),
                (Q.thread_restarts(), "restarts {{thread}}"),
            ],
            description="A thread restart is a service thread that died and was started again (see the log for "
            "its traceback).",
        ),
        row("Flow control"),
        panel(
            "Breaker state",
            [(Q.breaker_state(by="instance"), "{{instance}}")],
            kind="state-timeline",
            mappings=BREAKER_MAPPINGS,
            thresholds=[("green", None), ("orange", 1), ("red", 2)],
        ),
        panel(
            "Breaker transitions",
            [
                (Q.breaker_transitions(), "{{state}}"),
            ],
        ),
        panel(
            "Buffer capacity and frames",
            [
                (Q.total("frame_queue_buffer_capacity_frames"), "capacity"),
                (Q.total("frame_queue_buffer_frames"), "buffered"),
                (Q.total("frame_queue_spool_frames"), "spooled"),
            ],
        ),
        panel(
            "Buffer memory",
            [
                (Q.total("frame_queue_buffer_bytes"), "buffer"),
                (Q.total("frame_queue_spool_bytes"), "spool"),
                (Q.total("frame_queue_buffer_budget_bytes"), "budget"),
            ],
            unit="bytes",
            width=24,
        ),
        row("Redis"),
        panel(
            "Memory used against maxmemory",
            [
                (Q.redis("redis_memory_used_bytes"), "used {{instance}}"),
                (Q.redis("redis_memory_max_bytes"), "maxmemory {{instance}}"),
            ],
            unit="bytes",
        ),
        panel("Commands", [(Q.redis_rate("redis_commands_processed_total"), "{{instance}}")], unit="ops"),
        panel(
            "Clients",
            [
                (Q.redis("redis_connected_clients"), "connected {{instance}}"),
                (Q.redis_rate("redis_rejected_connections_total"), "rejected/s {{instance}}"),
            ],
        ),
        panel(
            "Up",
            [(Q.redis_min("redis_up"), "up")],
            kind="stat",
            width=6,
            height=4,
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "down", "color": "red", "index": 0},
                        "1": {"text": "up", "color": "green", "index": 1},
                    },
                }
            ],
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            "AOF last write",
            [(Q.redis_min("redis_aof_last_write_status"), "write")],
            kind="stat",
            width=6,
            height=4,
            mappings=AOF_MAPPINGS,
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            "AOF last rewrite",
            [(Q.redis_min("redis_aof_last_bgrewrite_status"), "rewrite")],
            kind="stat",
            width=6,
            height=4,
            mappings=AOF_MAPPINGS,
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            "Uptime", [(Q.redis_min("redis_uptime_in_seconds"), "uptime")], kind="stat", unit="s", width=6, height=4
        ),
        panel("Stream length", [(Q.stream("redis_stream_length"), "{{stream}}")]),
        panel(
            "Stream groups: pending and delivery lag",
            [
                (Q.stream("redis_stream_group_messages_pending"), "pending {{stream}}/{{group}}"),
                (Q.stream_group_lag_s(), "lag s {{stream}}/{{group}}"),
            ],
            description="Delivery lag: stream time between the newest entry and the group's last delivered "
            "entry (ids are millisecond timestamps), from the exporter's stream checks.",
        ),
        panel(
            "Evicted keys",
            [(Q.redis_increase("redis_evicted_keys_total"), "{{instance}}")],
            description="Must stay 0: Redis runs with maxmemory-policy noeviction.",
            thresholds=[("green", None), ("red", 1)],
            threshold_line=True,
        ),
    ]


def frame_queue() -> dict[str, Any]:
    """The ``frame-queue`` dashboard: the service, its queue and its Redis."""
    return {
        "uid": "frame-queue",
        "title": "Frame queue",
        "description": "frame-buffer: throughput, backlog, latency against the 10 ms target, losses, "
        "flow control, and the Redis behind it. Generated by dashboards/generate.py.",
        "tags": ["frame-buffer", "redis"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "type": "dashboard",
                    "name": "Annotations & Alerts",
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                }
            ]
        },
        "links": [],
        "templating": templating(),
        "panels": layout(frame_queue_panels()),
    }


#: File name (in this directory) -> dashboard.
DASHBOARDS = {"frame-queue.json": frame_queue}


def render(build: Any) -> str:
    """The exact text committed for a dashboard."""
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every dashboard file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = HERE / name, render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date, run python dashboards/generate.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
