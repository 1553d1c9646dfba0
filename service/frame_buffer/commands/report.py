"""``frame-buffer report``: the key panels of the ``frame-queue`` dashboard as one PNG or HTML file.

Grafana is not always at hand, so this draws publish/consume rates, latency percentiles against the 10 ms
target, consumer lag and memory from a Prometheus (``--prometheus URL --range 10m``), or the results of a
``frame-buffer bench --json`` run (``--bench-json FILE``), with matplotlib. ``--out`` ending in ``.html``
writes a page with the picture inlined and a table of the latest values.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frame_buffer.commands.common import number
from frame_buffer.config import show
from frame_buffer.errors import EXIT_UNREACHABLE, FrameBufferError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LATENCY_TARGET_MS = 10.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


#: A path in a message is shown up to this long (a file name must be recognisable, unlike a runaway number).
_PATH_CHARS = 400
#: Longest range, step or window a report asks Prometheus for (a year).
MAX_DURATION_S = 365 * 86400


def duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as ``90s``, ``10m`` or ``1h30m``; more than 0, at most a year."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration like 30s, 10m or 1h: {show(text)}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not 0 < seconds <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"must be more than 0s and at most 365d, got {show(text)}")
    return seconds


def prometheus_url(text: str) -> str:
    """An http(s) URL with a host: where Prometheus answers."""
    parts = urllib.parse.urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        raise argparse.ArgumentTypeError(f"the port is not a number 1 to 65535: {show(text)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"must be an http:// or https:// URL with a host, got {show(text)}")
    return text


def output_problem(path: Path) -> str | None:
    """Why ``--out`` cannot be written: not .png or .html, or no directory to write it into."""
    if path.suffix.lower() not in (".png", ".html"):
        return f"--out must end in .png or .html, got {show(str(path), _PATH_CHARS)}"
    if not path.parent.is_dir():
        return f"--out: no directory {show(str(path.parent), _PATH_CHARS)} to write {path.name} into"
    return None


def input_file(text: str) -> Path:
    """``--bench-json``: a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {show(text, _PATH_CHARS)}")
    return path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="render the key panels to a PNG or HTML file",
        description="Draw rates, latency percentiles, lag and memory from a Prometheus, or a bench run's "
        "results, into one PNG, or an HTML page with a table of the latest values.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", type=prometheus_url,
                        help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    source.add_argument(
        "--bench-json",
        metavar="FILE",
        type=input_file,
        help="output of `frame-buffer bench --json` (the JSON line, or the whole output)",
    )
    parser.add_argument("--range", type=duration, default="10m", help="time range shown")
    parser.add_argument("--end", type=number(0, 1e11), help="end of the range as a unix timestamp (default: now)")
    parser.add_argument("--step", type=duration, help="resolution (default: range / 240, at least 1s)")
    parser.add_argument(
        "--rate-window", type=duration, help="window of rate() and quantiles (default: 4 steps, at least 30s)"
    )
    parser.add_argument("--out", type=Path, required=True, help="report.png or report.html")
    parser.add_argument("--title", default="frame-buffer", help="title printed on the report")
    parser.set_defaults(func=run)


# -- data ----------------------------------------------------------------------------------------------
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
    """A query of a panel: PromQL (``{w}`` is the rate window), a legend template and a scale factor."""

    expr: str
    legend: str
    scale: float = 1.0


def prometheus_panels() -> list[tuple[str, str, float | None, list[PanelQuery]]]:
    """Title, unit, target and queries of each panel, the same expressions the dashboard uses."""

    def quantile(q: float, metric: str) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{{w}}])))"

    e2e, pub = "frame_queue_end_to_end_latency_seconds", "frame_queue_publish_duration_seconds"
    return [
        (
            "Throughput",
            "frames/s",
            None,
            [
                PanelQuery("sum(rate(frame_queue_published_total[{w}]))", "published"),
                PanelQuery("sum by (group) (rate(frame_queue_consumed_total[{w}]))", "consumed {group}"),
                PanelQuery("sum by (group) (rate(frame_queue_acked_total[{w}]))", "acked {group}"),
            ],
        ),
        (
            "Latency",
            "ms",
            LATENCY_TARGET_MS,
            [
                PanelQuery(quantile(0.5, e2e), "end-to-end p50", 1000),
                PanelQuery(quantile(0.9, e2e), "end-to-end p90", 1000),
                PanelQuery(quantile(0.99, e2e), "end-to-end p99", 1000),
                PanelQuery(quantile(0.99, pub), "publish p99", 1000),
            ],
        ),
        (
            "Backlog",
            "entries",
            None,
            [
                PanelQuery("max(frame_queue_depth)", "queue depth"),
                PanelQuery("max by (group) (frame_queue_consumer_lag)", "lag {group}"),
                PanelQuery("max by (group) (frame_queue_pending)", "pending {group}"),
            ],
        ),
        (
            "Memory",
            "MB",
            None,
            [
                PanelQuery("sum(redis_memory_used_bytes)", "Redis used", 1e-6),
                PanelQuery("sum(redis_memory_max_bytes > 0)", "Redis maxmemory", 1e-6),
                PanelQuery("sum(frame_queue_buffer_bytes)", "buffer", 1e-6),
                PanelQuery("sum(frame_queue_spool_bytes)", "spool", 1e-6),
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
    window = f"{int(window_s or max(4 * step, 30))}s"
    panels = []
    for title, unit, target, queries in prometheus_panels():
        panel = Panel(title, unit, target=target, log=target is not None)
        for query in queries:
            for item in query_range(url, query.expr.format(w=window), end - range_s, end, step):
                labels = item["metric"]
                points = [(float(t), float(v) * query.scale) for t, v in item["values"]]
                points = [(t, v) for t, v in points if math.isfinite(v)]
                if points:
                    legend = query.legend.format_map(_Default(labels)).strip()
                    panel.series.append(Series(legend, [t for t, _ in points], [v for _, v in points]))
        panels.append(panel)
    return panels


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


# -- drawing -------------------------------------------------------------------------------------------
def _figure(rows: int, cols: int, title: str) -> tuple[Figure, list[Axes]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.6 * rows), squeeze=False)
    figure.suptitle(title, fontsize=14, fontweight="bold")
    return figure, [ax for line in axes for ax in line]


def _save(figure: Figure) -> bytes:
    from matplotlib import pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def draw_timeseries(panels: list[Panel], title: str) -> bytes:
    """PNG of the panels in a grid of two columns."""
    from matplotlib import dates

    figure, axes = _figure(math.ceil(len(panels) / 2), 2, title)
    for ax, panel in zip(axes, panels, strict=False):
        ax.set_title(panel.title)
        ax.set_ylabel(f"{panel.unit} (log)" if panel.log else panel.unit)
        ax.grid(True, alpha=0.3)
        for series in panel.series:
            times = np.array([round(t * 1000) for t in series.times], dtype="datetime64[ms]")  # UTC
            ax.plot(times, series.values, label=series.legend, linewidth=1.2)
        if panel.target is not None:
            ax.axhline(
                panel.target, color="red", linestyle="--", linewidth=1, label=f"target {panel.target:g} {panel.unit}"
            )
        if not panel.series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
        else:
            if panel.log:  # keeps the target line in view however far above it the latency goes
                ax.set_yscale("log")
            else:  # headroom above the highest line for the legend
                ax.set_ylim(0, 1.3 * max(max(series.values) for series in panel.series) or 1)
            ax.xaxis.set_major_locator(dates.AutoDateLocator(minticks=3, maxticks=6))  # type: ignore[no-untyped-call]
            ax.xaxis.set_major_formatter(dates.ConciseDateFormatter(ax.xaxis.get_major_locator()))  # type: ignore[no-untyped-call]
            ax.legend(fontsize=8, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return _save(figure)


def draw_bench(data: dict[str, Any], title: str) -> bytes:
    """PNG of a bench run: throughput and latency of each backend against its raw-client baseline."""
    rows = data["rows"]
    labels = [f"{row['backend']}\n{row['size']}" for row in rows]
    positions = list(range(len(rows)))
    width = 0.38
    figure, (throughput, latency) = _figure(1, 2, title)
    throughput.bar([p - width / 2 for p in positions], [r["frames_per_s"] for r in rows], width, label="backend")
    throughput.bar(
        [p + width / 2 for p in positions], [r["baseline_frames_per_s"] for r in rows], width, label="raw client"
    )
    for p, row in zip(positions, rows, strict=True):
        throughput.annotate(
            f"{row['mb_per_s']:g} MB/s\n{row['ratio']:g}x raw",
            (p, row["frames_per_s"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    throughput.set_yscale("log")
    rates = [r[key] for r in rows for key in ("frames_per_s", "baseline_frames_per_s") if r[key] > 0]
    if rates:
        throughput.set_ylim(min(rates) / 2, max(rates) * 4)
    throughput.set_title("Throughput end to end")
    throughput.set_ylabel("frames/s (log)")
    timed = [(label, row) for label, row in zip(labels, rows, strict=True) if row.get("p99_ms")]
    if timed:
        bars = {"p50": "p50_ms", "p99": "p99_ms", "raw p50": "baseline_p50_ms", "raw p99": "baseline_p99_ms"}
        step = 0.8 / len(bars)
        for index, (name, key) in enumerate(bars.items()):
            latency.bar(
                [i + (index - 1.5) * step for i in range(len(timed))], [row[key] for _, row in timed], step, label=name
            )
        latency.set_xticks(range(len(timed)), [label for label, _ in timed])
    else:
        latency.text(0.5, 0.5, "no latency runs", ha="center", va="center", transform=latency.transAxes)
    latency.set_title("Latency at a paced rate")
    latency.set_ylabel("ms")
    throughput.set_xticks(positions, labels)
    for ax in (throughput, latency):
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(figure)


def write(out: Path, png: bytes, title: str, table: list[tuple[str, str]]) -> None:
    """Write the PNG, or an HTML page with the PNG inlined and a table of ``(name, value)`` rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        out.write_bytes(png)
        return
    cells = "\n".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in table)
    image = base64.b64encode(png).decode("ascii")
    out.write_text(
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 12px;border-bottom:1px solid #ddd}"
        "img{max-width:100%}</style></head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">\n'
        f"<table>\n{cells}\n</table>\n</body></html>\n"
    )


def _latest(panels: list[Panel]) -> list[tuple[str, str]]:
    return [(f"{p.title}: {s.legend}", f"{s.values[-1]:.4g} {p.unit}") for p in panels for s in p.series]


def run(args: argparse.Namespace) -> int:
    """Render the report; 0 on success, 1 when there was nothing to draw or the source failed."""
    if problem := output_problem(args.out):
        print(f"frame-buffer report: {problem}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("frame-buffer report: needs matplotlib: pip install 'frame-buffer[report]'", file=sys.stderr)
        return 2
    try:
        if args.bench_json is not None:
            data = load_bench(args.bench_json)
            title = f"{args.title}: bench"
            png = draw_bench(data, title)
            table = [
                (
                    f"{r['backend']} {r['size']}",
                    f"{r['frames_per_s']:g} frames/s, {r['mb_per_s']:g} MB/s, {r['ratio']:g}x the raw client",
                )
                for r in data["rows"]
            ]
            table += [(key, str(value)) for key, value in data.get("codec", {}).items()]
        else:
            panels = from_prometheus(args.prometheus, args.range, args.step, args.rate_window, args.end)
            if not any(panel.series for panel in panels):
                print(
                    f"frame-buffer report: no frame_queue data in {args.prometheus} for the last {args.range:g}s",
                    file=sys.stderr,
                )
                return 1
            ending = time.strftime("%Y-%m-%d %H:%M", time.gmtime(args.end))
            title = f"{args.title}: {args.range / 60:g} min to {ending} UTC"
            png = draw_timeseries(panels, title)
            table = _latest(panels)
    except (PrometheusError, OSError, ValueError, KeyError) as exc:
        print(f"frame-buffer report: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, PrometheusError) else 1  # 3: Prometheus did not answer
    write(args.out, png, title, table)
    print(f"frame-buffer report: wrote {args.out}")
    return 0
