"""How ``frame-buffer report`` draws, with matplotlib (imported only when drawing: it is an optional extra):
panels as time series in a grid, a bench run as bars against the raw clients, and the file it writes.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frame_buffer.commands.report.data import Panel

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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


def latest(panels: list[Panel]) -> list[tuple[str, str]]:
    """The HTML table's rows: each line's last value."""
    return [(f"{p.title}: {s.legend}", f"{s.values[-1]:.4g} {p.unit}") for p in panels for s in p.series]
