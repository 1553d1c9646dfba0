"""RTSP end to end: a live GStreamer stream -> frame-buffer run (rtsp source) -> workers, across a server restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.servers import free_port, wait_until

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
FPS = 25
pytestmark = pytest.mark.slow


def gstreamer_available() -> bool:
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; "
             "Gst.init(None); assert Gst.ElementFactory.find('x264enc')")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, check=False).returncode == 0


def start_rtsp(port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(port), str(FPS)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def frames(record: Path) -> list[tuple[str, int, int, int, int]]:
    if not record.exists():
        return []
    rows = []
    for line in record.read_text().splitlines():
        camera, seq, height, width, ts = line.split()
        rows.append((camera, int(seq), int(height), int(width), int(ts)))
    return rows


def gaps(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith('frame_queue_source_gaps_total{camera="cam0"}'))


def test_rtsp_stream_is_ingested_in_order_at_its_rate_and_survives_a_server_restart(
    tmp_path: Path, stream_name: str
) -> None:
    if not gstreamer_available():
        pytest.fail("GStreamer RTSP server missing: run scripts/setup.sh (it installs gir1.2-gst-rtsp-server-1.0)")
    rtsp_port, http_port = free_port(), free_port()
    record = tmp_path / "frames.txt"
    rtsp = start_rtsp(rtsp_port)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "RECORD_FRAMES_TO": str(record),
           "FRAME_BUFFER_STREAM": stream_name, "FRAME_BUFFER_REDIS_URL": REDIS_URL,
           "FRAME_BUFFER_HTTP_HOST": "127.0.0.1", "FRAME_BUFFER_HTTP_PORT": str(http_port),
           "FRAME_BUFFER_SOURCES": f"rtsp:cam0:url=rtsp://127.0.0.1:{rtsp_port}/live",
           "FRAME_BUFFER_HANDLER": "tests.rtsp.recording_handler:record", "FRAME_BUFFER_WORKERS": "1"}
    service = subprocess.Popen([str(Path(sys.executable).with_name("frame-buffer")), "run"], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(tmp_path / "service.log", "w"))  # noqa: SIM115
    try:
        wait_until(lambda: len(frames(record)) >= 3 * FPS, 90, "three seconds of RTSP frames")
        first = frames(record)
        assert {(h, w) for _, _, h, w, _ in first} == {(240, 320)}, "decoded frames of the wrong shape"
        seqs = [seq for _, seq, _, _, _ in first]
        assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs))), "out of order or gaps"
        span_s = (first[-1][4] - first[FPS][4]) / 1e9  # skip the first second (decoder start-up burst)
        rate = (len(first) - 1 - FPS) / span_s
        assert FPS * 0.6 < rate < FPS * 1.4, f"ingest at {rate:.1f} frames/s, stream at {FPS}"

        rtsp.send_signal(signal.SIGTERM)
        rtsp.wait(30)
        wait_until(lambda: gaps(http_port) >= 1, 60, "the gap to be counted")
        before = len(frames(record))
        rtsp = start_rtsp(rtsp_port)
        wait_until(lambda: len(frames(record)) >= before + FPS, 90, "ingest to resume after the restart")
        after = frames(record)
        resumed = [seq for _, seq, _, _, _ in after[before:]]
        assert resumed[0] > seqs[-1] and resumed == sorted(resumed), "sequence did not continue after the gap"
        print(f"rtsp: {len(first)} frames before the restart at {rate:.1f}/s, {len(after) - before} after, "
              f"gaps counted {gaps(http_port):.0f}")
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, (tmp_path / "service.log").read_text()
        rtsp.send_signal(signal.SIGTERM)
        rtsp.wait(30)
        redis.Redis.from_url(REDIS_URL).delete(stream_name, f"{stream_name}:dlq")


def test_an_rtsp_url_the_server_refuses_stops_the_start_with_one_line(tmp_path: Path) -> None:
    if not gstreamer_available():
        pytest.fail("GStreamer RTSP server missing: run scripts/setup.sh (it installs gir1.2-gst-rtsp-server-1.0)")
    rtsp_port = free_port()
    rtsp = start_rtsp(rtsp_port)
    try:
        url = f"rtsp://viewer:secret@127.0.0.1:{rtsp_port}/no-such-path"
        env = {**os.environ, "FRAME_BUFFER_SOURCES": f"rtsp:cam0:url={url}", "FRAME_BUFFER_HTTP_HOST": "127.0.0.1",
               "FRAME_BUFFER_HTTP_PORT": str(free_port())}
        result = subprocess.run([str(Path(sys.executable).with_name("frame-buffer")), "run"], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        rtsp.send_signal(signal.SIGTERM)
        rtsp.wait(30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "frame-buffer: configuration error: FRAME_BUFFER_SOURCES: source rtsp:cam0: cannot open "
        f"rtsp://viewer:***@127.0.0.1:{rtsp_port}/no-such-path: Server returned 404 Not Found"
    )
