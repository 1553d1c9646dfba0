"""A worker handler for tests: appends ``camera seq height width ts_ns`` to $RECORD_FRAMES_TO per frame."""

import os
import threading

from frame_buffer.frame import Frame

_lock = threading.Lock()


def record(frame: Frame) -> None:
    shape = getattr(frame.data, "shape", (0, 0))
    with _lock, open(os.environ["RECORD_FRAMES_TO"], "a") as out:
        out.write(f"{frame.camera} {frame.seq} {shape[0]} {shape[1]} {frame.ts_ns}\n")
