"""A moving test pattern at a set rate: distinct frames, cheap to make at 1000 frames/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from frame_buffer.frame import Frame

#: Distinct frames precomputed per source; each frame is one step of the moving pattern.
PATTERN_PHASES = 16
#: Longest pacing wait without a heartbeat (a slow source must not look stuck to the supervisor).
BEAT_EVERY_S = 1.0


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
        stop: ends the iteration at once, also in the middle of a pacing wait.
        beat: called at least every :data:`BEAT_EVERY_S` while waiting (the supervisor's heartbeat).
    """

    def __init__(self, camera: str, fps: float = 30.0, shape: tuple[int, ...] = (480, 640, 3),
                 count: int | None = None, *, stop: threading.Event | None = None,
                 beat: Callable[[], None] | None = None) -> None:
        self.camera = camera
        self.fps = fps
        self.count = count
        self.stop = stop or threading.Event()
        self.beat = beat or (lambda: None)
        self.phases = [test_pattern(shape, phase) for phase in range(PATTERN_PHASES)]
        #: Sequence number of the next frame: iterating again (a restarted thread) continues the numbering.
        self.next_seq = 0

    def __iter__(self) -> Iterator[Frame]:
        start, start_ns = time.monotonic(), time.time_ns()
        first = self.next_seq
        while (self.count is None or self.next_seq < self.count) and not self.stop.is_set():
            seq = self.next_seq
            captured_ns = None
            if self.fps > 0:
                due = start + (seq - first) / self.fps
                while (delay := due - time.monotonic()) > 0:
                    if self.stop.wait(min(delay, BEAT_EVERY_S)):
                        return
                    self.beat()
                # Stamped when a camera would have taken it, not when this thread got round to it: a late
                # thread (a busy interpreter) is latency the buffer adds, and shows as such.
                captured_ns = start_ns + round((seq - first) * 1e9 / self.fps)
            self.next_seq = seq + 1
            image = self.phases[seq % PATTERN_PHASES]
            yield Frame(self.camera, seq, image) if captured_ns is None else Frame(self.camera, seq, image, captured_ns)
