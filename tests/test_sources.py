"""Sources: the synthetic pattern and video files decoded with PyAV (a real file made by ffmpeg)."""

from __future__ import annotations

import shutil
import subprocess
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from frame_buffer.sources import SourceSpec, open_source
from frame_buffer.sources.synthetic import PATTERN_PHASES, SyntheticSource


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
