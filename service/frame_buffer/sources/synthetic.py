"""A moving test pattern at a set rate: distinct frames, cheap to make at 1000 frames/s."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from frame_buffer.frame import Frame

#: Distinct frames precomputed per source; each frame is one step of the moving pattern.
PATTERN_PHASES = 16


def test_pattern(shape: tuple[int, ...], phase: int) -> npt.NDArray[np.uint8]:
    """Diagonal colour bars shifted by ``phase``: a frame that is neither constant nor random."""
    rows, cols = shape[0], shape[1] if len(shape) > 1 else 1
    y = np.arange(rows, dtype=np.uint32)[:, None]
    x = np.arange(cols, dtype=np.uint32)[None, :]
    base = ((x + y + phase * 8) // 8 * 37) % 256
    planes = [base, (base * 3 + 85) % 256, (base * 7 + 170) % 256]
    image = np.stack(planes[: shape[2]] if len(shape) > 2 else planes[:1], axis=-1)
    return np.ascontiguousarray(image.reshape(shape).astype(np.uint8))


class SyntheticSource:
    """Frames of a moving pattern for one camera, paced at ``fps`` (0 = as fast as possible).

    Args:
        camera: camera id stamped on each frame.
        fps: target rate; the iterator sleeps to keep it and catches up after a stall.
        shape: frame shape, e.g. (480, 640, 3).
        count: stop after this many frames (None = never).
    """

    def __init__(self, camera: str, fps: float = 30.0, shape: tuple[int, ...] = (480, 640, 3),
                 count: int | None = None) -> None:
        self.camera = camera
        self.fps = fps
        self.count = count
        self.phases = [test_pattern(shape, phase) for phase in range(PATTERN_PHASES)]

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        seq = 0
        while self.count is None or seq < self.count:
            if self.fps > 0:
                delay = start + seq / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield Frame(self.camera, seq, self.phases[seq % PATTERN_PHASES])
            seq += 1
