"""A queue connection that is opened on first use and dropped after a failure, never reused broken."""

from __future__ import annotations

import logging
from collections.abc import Callable

from frame_buffer.queue import FrameQueue

log = logging.getLogger(__name__)


class QueueConnection:
    """Holds the :class:`FrameQueue` of one thread (the publisher, a worker).

    Args:
        open_queue: makes a new queue; called again after :meth:`drop`, and may raise while the backend is down.
    """

    def __init__(self, open_queue: Callable[[], FrameQueue]) -> None:
        self._open_queue = open_queue
        self._queue: FrameQueue | None = None

    @property
    def is_open(self) -> bool:
        return self._queue is not None

    def get(self) -> FrameQueue:
        """The open queue, opening it if needed."""
        if self._queue is None:
            self._queue = self._open_queue()
        return self._queue

    def drop(self) -> None:
        """Close and forget the queue; the next :meth:`get` opens a fresh one."""
        queue, self._queue = self._queue, None
        if queue is not None:
            try:
                queue.close()
            except Exception as exc:  # closing a broken connection may fail too
                log.debug("closing the queue failed: %r", exc)
