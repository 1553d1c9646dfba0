"""Sources: the synthetic pattern and video files decoded with PyAV (a real file made by ffmpeg)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from frame_buffer.errors import ConfigError
from frame_buffer.sources import SourceSpec, open_source, probe_source
from frame_buffer.sources.synthetic import PATTERN_PHASES, SyntheticSource
from frame_buffer.sources.video import RECONNECT_BACKOFF, VideoSource
from tests.servers import free_port, wait_until


def test_synthetic_frames_move_and_are_not_blank() -> None:
    frames = list(SyntheticSource("cam", fps=0, shape=(48, 64, 3), count=PATTERN_PHASES + 1))
    assert [f.seq for f in frames] == list(range(PATTERN_PHASES + 1))
    assert frames[0].data.shape == (48, 64, 3) and frames[0].data.std() > 10
    assert not np.array_equal(frames[0].data, frames[1].data)
    assert np.array_equal(frames[0].data, frames[PATTERN_PHASES].data)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is missing: run scripts/setup.sh")
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
                    "-t", "2", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_file_source_decodes_every_frame_in_order(clip: Path) -> None:
    frames = list(open_source(SourceSpec.parse(f"file:cam1:path={clip}")))
    assert len(frames) == 20
    assert [f.seq for f in frames] == list(range(20))
    assert {f.data.shape for f in frames} == {(120, 160, 3)}
    assert frames[0].meta == {"source": str(clip)}


def test_file_source_can_loop(clip: Path) -> None:
    frames = list(islice(open_source(SourceSpec.parse(f"file:cam1:path={clip}:loop=true")), 45))
    assert [f.seq for f in frames] == list(range(45))


def test_missing_file_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="No such file"):
        list(open_source(SourceSpec.parse(f"file:cam1:path={tmp_path / 'none.mp4'}")))


# -- checked at parse: every bad option is a ConfigError naming the source ------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("synthetic:cam0:fps=abc", "source synthetic:cam0: fps: must be a number >= 0 (0: as fast as possible), "
                                   "got 'abc'"),
        ("synthetic:cam0:fps=-5", "source synthetic:cam0: fps: must be a number >= 0"),
        ("synthetic:cam0:fps=nan", "source synthetic:cam0: fps: must be a number >= 0"),
        ("synthetic:cam0:fps=inf", "source synthetic:cam0: fps: must be a number >= 0"),
        ("synthetic:cam0:size=12by5", "source synthetic:cam0: size: must be WIDTHxHEIGHT, got '12by5'"),
        ("synthetic:cam0:size=0x5", "source synthetic:cam0: size: width and height must be 1 to 16384"),
        ("synthetic:cam0:size=16385x2", "source synthetic:cam0: size: width and height must be 1 to 16384"),
        ("synthetic:cam0:size=16384x16384", "makes frames of 805306368 bytes, more than 33554432"),
        ("synthetic:cam0:bogus=1", "source synthetic:cam0: unknown option 'bogus'; synthetic takes fps, size"),
        ("synthetic:cam0:fps", "source synthetic:cam0: option 'fps' is not key=value"),
        ("synthetic:cam0:fps=1:fps=2", "source synthetic:cam0: option fps given twice"),
        ("file:cam1", "source file:cam1: needs path=FILE"),
        ("file:cam1:path=", "source file:cam1: needs path=FILE"),
        ("file:cam1:path=/a.mp4:loop=yes", "source file:cam1: loop: must be true or false, got 'yes'"),
        ("file:cam1:path=/a.mp4:url=rtsp://x/y", "unknown option 'url'; file takes path, loop"),
        ("rtsp:cam2", "source rtsp:cam2: needs url=rtsp://HOST[:PORT]/PATH"),
        ("rtsp:cam2:url=http://host/live", "source rtsp:cam2: url: must start with rtsp:// or rtsps://"),
        ("rtsp:cam2:url=http://user:secret@host/live", "got 'http://user:***@host/live'"),
        ("rtsp:cam2:fps=5:url=rtsp://h/l", "unknown option 'fps'; rtsp takes url"),
        ("webcam:cam3", "is not kind:camera"),
        ("synthetic:", "is not kind:camera"),
    ],
)
def test_every_option_is_checked_when_the_spec_is_parsed(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SourceSpec.parse(text)
    assert str(caught.value).startswith("FRAME_BUFFER_SOURCES: ")
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_good_specs_parse_with_their_options() -> None:
    assert SourceSpec.parse("synthetic:c:fps=0:size=1x1").options == {"fps": "0", "size": "1x1"}
    assert SourceSpec.parse("file:c:path=/v/a.mp4:loop=true").options == {"path": "/v/a.mp4", "loop": "true"}
    spec = SourceSpec.parse("rtsp:c:url=rtsps://u:pw@10.0.0.5:8554/live?x=1:y")
    assert spec.options == {"url": "rtsps://u:pw@10.0.0.5:8554/live?x=1:y"}
    assert spec.location == "rtsps://u:***@10.0.0.5:8554/live?x=1:y"


# -- opened at start ----------------------------------------------------------------------------------------
def test_the_start_up_probe_opens_files_and_names_what_is_wrong(clip: Path, tmp_path: Path) -> None:
    assert probe_source(SourceSpec.parse(f"file:cam1:path={clip}")) is None
    assert probe_source(SourceSpec.parse("synthetic:cam0")) is None
    with pytest.raises(ConfigError, match=r"source file:cam1: cannot open .*none\.mp4: No such file or directory$"):
        probe_source(SourceSpec.parse(f"file:cam1:path={tmp_path / 'none.mp4'}"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(ConfigError, match=r"source file:cam1: cannot open .*notes\.mp4: Invalid data found"):
        probe_source(SourceSpec.parse(f"file:cam1:path={text}"))


def test_an_rtsp_camera_that_does_not_answer_is_a_reason_not_an_error() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    assert probe_source(SourceSpec.parse(f"rtsp:cam2:url={url}")) == f"cannot open {url}: Connection refused"


# -- stopping and reconnecting -----------------------------------------------------------------------------
def test_a_live_source_that_never_connects_stops_at_once_when_told(tmp_path: Path) -> None:
    stop = threading.Event()
    beats: list[float] = []
    source = open_source(SourceSpec.parse(f"rtsp:cam2:url=rtsp://127.0.0.1:{free_port()}/live"), stop,
                         lambda: beats.append(time.monotonic()))
    assert isinstance(source, VideoSource)
    frames: list[object] = []
    reader = threading.Thread(target=lambda: frames.extend(source))
    reader.start()
    wait_until(lambda: source.gaps >= 2, 30, "two failed connection attempts")
    assert source.problem is not None and "Connection refused; reconnecting (attempt" in source.problem
    assert beats, "the reconnect wait beats the heartbeat"
    stop.set()
    reader.join(10)
    assert not reader.is_alive(), "the reconnect wait did not end at the stop"
    assert frames == []


def test_the_reconnect_backoff_is_capped_and_never_overflows() -> None:
    assert [RECONNECT_BACKOFF.compute(n) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert RECONNECT_BACKOFF.compute(1025) == RECONNECT_BACKOFF.compute(10**9) == 10.0


def test_a_synthetic_source_stops_in_the_middle_of_a_slow_pace() -> None:
    stop = threading.Event()
    beats: list[float] = []
    source = SyntheticSource("cam", fps=0.01, shape=(2, 2, 3), stop=stop, beat=lambda: beats.append(1.0))
    frames = iter(source)
    assert next(frames).seq == 0  # the first frame is due at once, the second in 100 s
    reader = threading.Thread(target=lambda: list(frames))
    reader.start()
    wait_until(lambda: len(beats) >= 1, 10, "a heartbeat during the pacing wait")
    stop.set()
    reader.join(10)
    assert not reader.is_alive()


def test_a_source_iterated_again_goes_on_with_its_numbering() -> None:
    source = SyntheticSource("cam", fps=0, shape=(2, 2, 3), count=10)
    assert [f.seq for f in islice(source, 3)] == [0, 1, 2]
    assert [f.seq for f in source] == list(range(3, 10))


def test_a_paced_synthetic_source_stamps_each_frame_when_it_was_due_not_when_it_was_made() -> None:
    # Stamped on the schedule: a thread that falls behind (a busy interpreter) shows as end-to-end latency.
    frames = list(SyntheticSource("cam", fps=1000, shape=(2, 2, 3), count=50))
    assert [f.ts_ns - frames[0].ts_ns for f in frames] == [seq * 1_000_000 for seq in range(50)]

