"""A worker handler for the live hostile tests: appends ``camera seq`` per frame to $RECORD_FRAMES_TO.

Unlike tests/rtsp/recording_handler.py it reads nothing of the payload, so a valid frame of any shape (0-d,
empty) or an encoded ``bytes`` payload is recorded, not failed.
"""

import os
import threading

from frame_buffer.frame import Frame

_lock = threading.Lock()


def record(frame: Frame) -> None:
    with _lock, open(os.environ["RECORD_FRAMES_TO"], "a") as out:
        out.write(f"{frame.camera} {frame.seq}\n")
