"""Worker handlers that misbehave on purpose, for the supervision tests (loaded by ``frame-buffer run``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

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


def hang_first_time(frame: Frame) -> None:
    """The first call in any process hangs for good, after writing its pid to ``FB_TEST_MARKER``; every later
    call (in any process) handles the frame: the process holding the hung batch can be killed by the test."""
    marker = Path(os.environ["FB_TEST_MARKER"])
    draft = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}")
    draft.write_text(str(os.getpid()))
    try:
        os.link(draft, marker)  # atomic and exclusive: one caller wins, with its pid already in the file
    except FileExistsError:
        record_stats(frame)
        return
    finally:
        draft.unlink()
    threading.Event().wait()


def exit_process(frame: Frame) -> None:
    """Ends the whole worker process on every frame: a crash loop of a worker process."""
    os._exit(3)
