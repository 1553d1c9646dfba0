"""Worker handlers that misbehave on purpose, for the supervision tests (loaded by ``frame-buffer run``)."""

from __future__ import annotations

import threading

from frame_buffer.frame import Frame
from frame_buffer.handlers import record_stats

_lock = threading.Lock()
_killed = False


class ThreadKill(BaseException):
    """Not an ``Exception``: the worker's per-frame ``except Exception`` lets it through and the thread dies."""


def die_once(frame: Frame) -> None:
    """Kills the worker thread on the first frame, then handles frames normally."""
    global _killed
    with _lock:
        first, _killed = not _killed, True
    if first:
        raise ThreadKill(f"the test handler kills its thread on frame {frame.camera}/{frame.seq}")
    record_stats(frame)


def die_always(frame: Frame) -> None:
    """Kills the worker thread on every frame: a crash loop."""
    raise ThreadKill("the test handler kills its thread on every frame")


def hang(frame: Frame) -> None:
    """Never returns: the worker makes no progress any more."""
    threading.Event().wait()
