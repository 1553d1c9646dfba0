"""Video files and RTSP streams decoded with PyAV.

RTSP uses TCP transport (no silent UDP loss). A live source that fails or ends reconnects with the project's
capped exponential backoff (``backoff.py``, no overflow however long the camera is away); each
interruption is logged and counted in ``frame_queue_source_gaps_total``, and :attr:`VideoSource.problem` says
why while no frame comes (``/readyz`` shows it). The stop event ends the reconnect wait at once; a blocked
open or read ends within its timeout (:data:`OPEN_TIMEOUT_S`, :data:`READ_TIMEOUT_S`), so a drain is never held
up for long by a camera.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import av
import numpy as np
import numpy.typing as npt

from frame_buffer import metrics
from frame_buffer.backoff import Backoff, ExponentialBackoff
from frame_buffer.checks import masked_url
from frame_buffer.errors import ConfigError
from frame_buffer.frame import Frame

log = logging.getLogger(__name__)

#: Longest wait for a connection (and the stream's first packets) when opening.
OPEN_TIMEOUT_S = 5.0
#: Longest wait for one read of an open stream: a camera that stops sending is reconnected after this.
READ_TIMEOUT_S = 5.0
#: Reconnect delays of a live source: 0.5, 1, 2, 4, 8, 10, 10 ... s.
RECONNECT_BACKOFF: Backoff = ExponentialBackoff(0.5, 10.0)


def _options(location: str) -> dict[str, str]:
    return {"rtsp_transport": "tcp"} if location.startswith("rtsp") else {}


def probe(name: str, location: str, *, live: bool) -> str | None:
    """Open ``location`` once (and decode a frame of a file); see :func:`frame_buffer.sources.probe_source`."""
    shown = masked_url(location)
    try:
        with av.open(location, options=_options(location), timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)) as container:
            if not container.streams.video:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: source {name}: {shown} has no video stream")
            if not live:
                next(container.decode(container.streams.video[0]))
    except StopIteration:
        raise ConfigError(f"FRAME_BUFFER_SOURCES: source {name}: {shown} has no frame") from None
    except av.error.HTTPClientError as exc:  # the server answered and refused: 401, 403, 404, ...
        raise ConfigError(f"FRAME_BUFFER_SOURCES: source {name}: cannot open {shown}: {_reason(exc)}") from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if not live:
            raise ConfigError(f"FRAME_BUFFER_SOURCES: source {name}: cannot open {shown}: {_reason(exc)}") from None
        return f"cannot open {shown}: {_reason(exc)}"
    return None


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without the ``[Errno N]`` prefix and the repeated file name."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)


class VideoSource:
    """Decoded RGB frames from a file or an RTSP url.

    Args:
        camera: camera id stamped on each frame.
        location: file path or ``rtsp://`` url.
        live: reconnect until stopped when the stream fails or ends (RTSP).
        loop: start a file again at its end.
        stop: ends the iteration: at once during a reconnect wait, within a read timeout otherwise.
        beat: called on every frame and before every reconnect wait (the supervisor's heartbeat).
        backoff: delay before reconnect number ``n`` (``compute(n)``).
    """

    def __init__(self, camera: str, location: str, *, live: bool = False, loop: bool = False,
                 stop: threading.Event | None = None, beat: Callable[[], None] | None = None,
                 backoff: Backoff = RECONNECT_BACKOFF) -> None:
        self.camera = camera
        self.location = location
        self.live = live
        self.loop = loop
        self.stop = stop or threading.Event()
        self.beat = beat or (lambda: None)
        self.backoff = backoff
        self.gaps = 0
        #: Why no frame comes right now (None while frames come).
        self.problem: str | None = None
        #: Sequence number of the next frame: iterating again (a restarted thread) continues the numbering.
        self.next_seq = 0

    def __iter__(self) -> Iterator[Frame]:
        failures = 0
        shown = masked_url(self.location)
        while not self.stop.is_set():
            try:
                for image in self._decode():
                    failures = 0
                    self.problem = None
                    seq, self.next_seq = self.next_seq, self.next_seq + 1  # a restart never reuses a number
                    yield Frame(self.camera, seq, image, meta={"source": shown})
                    if self.stop.is_set():
                        return
                if not (self.live or self.loop):
                    return
                reason = "stream ended"
            except (av.error.FFmpegError, OSError) as exc:
                if not self.live:
                    raise
                reason = _reason(exc)
            if self.live:
                self.gaps += 1
                failures += 1
                metrics.source_gaps.labels(camera=self.camera).inc()
                delay = self.backoff.compute(failures)
                self.problem = f"cannot read {shown}: {reason}; reconnecting (attempt {failures})"
                log.warning("source %s (%s) interrupted: %s; reconnecting in %.1fs", self.camera, shown, reason,
                            delay)
                self.beat()
                if self.stop.wait(delay):
                    return

    def _decode(self) -> Iterator[npt.NDArray[np.uint8]]:
        with av.open(self.location, options=_options(self.location),
                     timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                self.beat()
                image: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")  # type: ignore[assignment]
                yield image
