"""SIGTERM and SIGINT for ``frame-buffer run``: never lost, never fatal, whichever thread the kernel picks.

Why not ``pthread_sigmask`` + ``sigwait`` (the earlier design): the mask is per thread and only threads created
after it inherit it. Threads that exist before (numpy's OpenBLAS pool is created at import) keep the signals
unblocked, and with no handler installed the kernel may deliver SIGTERM to one of them and end the process by
the default action: exit 143, nothing drained (issue 13; one CI run failed on it).

Why not a handler and ``Event.wait``: Python runs signal handlers in the main thread only, and a signal
delivered to another thread does not interrupt the main thread's wait.

So: a Python handler for both signals (with a handler installed no thread takes the default action), and
``signal.set_wakeup_fd`` on a non-blocking pipe: the C-level handler writes the signal's number into the pipe
in whatever thread the signal lands, and the main thread waits in ``select`` on that pipe. A signal that comes
while the service is still starting stays in the pipe and in :attr:`StopSignals.received`, so the service
drains as soon as it has started. Later signals (a second Ctrl-C during the drain) are only recorded: the drain
has its own time limit. The handler does nothing but record: writing a log line from a handler can re-enter a
stream the main thread is writing to.
"""

from __future__ import annotations

import os
import select
import signal
import time
from types import FrameType

#: The signals that stop the service.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Installs the handlers and the wake-up pipe; create it in the main thread, first thing.

    :meth:`close` gives the wake-up file descriptor back but leaves the recording handlers in place: a signal
    that arrives while the process exits must not end it by the default action either.
    """

    def __init__(self) -> None:
        #: Every stop signal the handler recorded, in order (the main thread runs it soon after delivery).
        self.received: list[int] = []
        self._from_pipe: int | None = None
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        # Handlers first: from this line on neither signal can take its default action in any thread.
        for number in STOP_SIGNALS:
            signal.signal(number, self._record)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)

    def _record(self, number: int, frame: FrameType | None) -> None:
        self.received.append(number)

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived (its handler ran, or its byte is waiting in the pipe)."""
        self._drain_pipe()
        return bool(self.received) or self._from_pipe is not None

    def _drain_pipe(self) -> None:
        """Read what the C-level handler wrote; remember the first stop signal's number found there."""
        while True:
            try:
                data = os.read(self._read, 512)
            except OSError:  # BlockingIOError: nothing (more) to read
                return
            if not data:
                return
            numbers = [number for number in data if number in STOP_SIGNALS]
            if numbers and self._from_pipe is None:
                self._from_pipe = numbers[0]

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until a stop signal arrives (at once if one already did); its number, or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.requested:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if remaining == 0.0:
                return None
            select.select([self._read], [], [], remaining)
        return self.received[0] if self.received else self._from_pipe

    def close(self) -> None:
        """Give the wake-up fd back and close the pipe; the handlers keep recording (see the class doc)."""
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)
