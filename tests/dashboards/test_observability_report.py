"""``frame-buffer report`` against the live Prometheus of the test stack and a real bench run."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frame_buffer import metrics
from frame_buffer.cli import main
from frame_buffer.commands import report
from frame_buffer.commands.report.data import Panel, from_prometheus
from tests.dashboards.stack import Prometheus, frame_buffer_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEADLINE_S = 120.0


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; fails if the file is no PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def panels(stack: Prometheus) -> list[Panel]:
    """The report's panels once every one of them has data (polled up to a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = from_prometheus(stack.url, range_s=120, step_s=1, window_s=10)
        empty = [panel.title for panel in found if not panel.series]
        if not empty:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"report panels without data after {DEADLINE_S:.0f}s: {empty}\n{stack.logs()}")
        time.sleep(0.5)


@pytest.mark.slow
def test_every_report_panel_has_data(panels: list[Panel]) -> None:
    """Rates, latency, backlog and memory all come back from Prometheus, with the 10 ms target."""
    titles = {panel.title: panel for panel in panels}
    assert set(titles) == {"Throughput", "Latency", "Where the time goes: p50", "Where the time goes: p99", "Backlog",
                           "Memory"}
    assert titles["Latency"].target == 10.0
    legends = {series.legend for series in titles["Throughput"].series}
    assert "published" in legends and any(legend.startswith("acked") for legend in legends), legends
    assert any(series.legend == "Redis used" for series in titles["Memory"].series)
    for quantile in ("p50", "p99"):
        stages = {series.legend for series in titles[f"Where the time goes: {quantile}"].series}
        assert stages == set(metrics.STAGES), f"{quantile}: stages with data {stages}"


@pytest.mark.slow
def test_png_from_prometheus(
    stack: Prometheus, panels: list[Panel], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command writes a PNG of the 3x2 panel grid and prints where the time goes, stage by stage."""
    out = tmp_path / "report.png"
    code = main(
        [
            "report",
            "--prometheus",
            stack.url,
            "--range",
            "2m",
            "--step",
            "1s",
            "--rate-window",
            "10s",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    width, height = png_size(out)
    assert (width, height) == (1400, 1080), "two columns of 7 in, three rows of 3.6 in, at 100 dpi"
    printed = capsys.readouterr().out
    assert "where the time goes" in printed
    assert [line.split()[0] for line in printed.splitlines() if line.split()[:1] and line.split()[0] in
            metrics.STAGES] == list(metrics.STAGES), printed


@pytest.mark.slow
def test_html_from_prometheus(stack: Prometheus, panels: list[Panel], tmp_path: Path) -> None:
    """The HTML page inlines the picture and lists the latest values."""
    out = tmp_path / "report.html"
    end = str(time.time())
    assert main(["report", "--prometheus", stack.url, "--range", "1m", "--end", end, "--out", str(out)]) == 0
    page = out.read_text()
    assert 'src="data:image/png;base64,' in page
    assert "Throughput: published" in page and "Latency: end-to-end p99" in page


@pytest.mark.slow
def test_png_from_a_real_bench_run(stack: Prometheus, tmp_path: Path) -> None:
    """A short ``frame-buffer bench --json`` against the test Redis, drawn from its whole output."""
    bench = tmp_path / "bench.txt"
    done = subprocess.run(
        [
            frame_buffer_cli(),
            "bench",
            "--redis-url",
            stack.redis_url,
            "--sizes",
            "100KB",
            "--scale",
            "0.05",
            "--rate",
            "200",
            "--latency-seconds",
            "0.5",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    bench.write_text(done.stdout)
    out = tmp_path / "bench.png"
    assert main(["report", "--bench-json", str(bench), "--out", str(out)]) == 0
    assert png_size(out) == (1400, 360)


def test_unreachable_prometheus_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No Prometheus: exit 3 (a server did not answer) with the URL in the message, and no file."""
    out = tmp_path / "report.png"
    assert main(["report", "--prometheus", "http://127.0.0.1:9", "--out", str(out)]) == 3
    assert "cannot query http://127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists()


def test_wrong_output_type_and_duration_are_refused(tmp_path: Path) -> None:
    """--out must be .png or .html; --range must be a duration."""
    assert main(["report", "--prometheus", "http://127.0.0.1:9", "--out", str(tmp_path / "r.pdf")]) == 2
    with pytest.raises(SystemExit):
        main(["report", "--prometheus", "http://127.0.0.1:9", "--range", "ten", "--out", "r.png"])
    assert report.duration("1h30m") == 5400


def test_the_command_is_registered() -> None:
    """``frame-buffer report --help`` works from the installed entry point."""
    done = subprocess.run(
        [sys.executable, "-m", "frame_buffer.cli", "report", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "--bench-json" in done.stdout, done.stderr
