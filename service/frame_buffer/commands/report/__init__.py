"""``frame-buffer report``: the key panels of the ``frame-queue`` dashboard as one PNG or HTML file.

Grafana is not always at hand, so this draws publish/consume rates, latency percentiles against the 10 ms
target, consumer lag and memory from a Prometheus (``--prometheus URL --range 10m``), or the results of a
``frame-buffer bench --json`` run (``--bench-json FILE``), with matplotlib. ``--out`` ending in ``.html``
writes a page with the picture inlined and a table of the latest values.

The queries are the dashboard's (``promql.py``) over every camera, group and Redis instance; ``data.py``
fetches them, ``draw.py`` draws.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.parse
from pathlib import Path

from frame_buffer.commands.common import number
from frame_buffer.commands.report.data import PrometheusError, from_prometheus, load_bench, stage_breakdown
from frame_buffer.commands.report.draw import draw_bench, draw_timeseries, latest, write
from frame_buffer.config import show

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
            table = latest(panels)
            _print_stages(stage_breakdown(panels))
    except (PrometheusError, OSError, ValueError, KeyError) as exc:
        print(f"frame-buffer report: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, PrometheusError) else 1  # 3: Prometheus did not answer
    write(args.out, png, title, table)
    print(f"frame-buffer report: wrote {args.out}")
    return 0


def _print_stages(stages: list[tuple[str, float | None, float | None]]) -> None:
    """Where the time goes, at the end of the range: each stage's p50 and p99 in ms."""
    if not stages:
        return
    print("where the time goes (frame_queue_stage_seconds, end of the range):")
    print(f"  {'stage':<20} {'p50 ms':>9} {'p99 ms':>9}")
    for stage, p50, p99 in stages:
        print(f"  {stage:<20} {_ms(p50):>9} {_ms(p99):>9}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
