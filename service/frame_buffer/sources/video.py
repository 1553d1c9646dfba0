"""Video files and RTSP streams decoded with PyAV.

RTSP uses TCP transport (no silent UDP loss). A live source that fails or ends reconnects with
exponential backoff; each interruption is logged and counted in ``frame_queue_source_gaps_total``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import av
import numpy as np
import numpy.typing as npt

from frame_buffer import metrics
from frame_buffer.frame import Frame

log = logging.getLogger(__name__)


class VideoSource:
    """Decoded RGB frames from a file or an RTSP url.

    Args:
        camera: camera id stamped on each frame.
        location: file path or ``rtsp://`` url.
        live: reconnect forever when the stream fails or ends (RTSP).
        loop: start a file again at its end.
        reconnect_base_s / reconnect_cap_s: backoff between reconnects.
    """

    def __init__(self, camera: str, location: str, *, live: bool = False, loop: bool = False,
                 reconnect_base_s: float = 0.5, reconnect_cap_s: float = 10.0) -> None:
        self.camera = camera
        self.location = location
        self.live = live
        self.loop = loop
        self.reconnect_base_s = reconnect_base_s
        self.reconnect_cap_s = reconnect_cap_s
        self.gaps = 0

    def __iter__(self) -> Iterator[Frame]:
        seq = 0
        failures = 0
        while True:
            try:
                for image in self._decode():
                    failures = 0
                    yield Frame(self.camera, seq, image, meta={"source": self.location})
                    seq += 1
                if not (self.live or self.loop):
                    return
                reason = "stream ended"
            except (av.error.FFmpegError, OSError) as exc:
                if not self.live:
                    raise
                reason = str(exc)
            if self.live:
                self.gaps += 1
                metrics.source_gaps.labels(camera=self.camera).inc()
                delay = min(self.reconnect_cap_s, self.reconnect_base_s * 2**failures)
                failures += 1
                log.warning("source %s (%s) interrupted: %s; reconnecting in %.1fs",
                            self.camera, self.location, reason, delay)
                time.sleep(delay)

    def _decode(self) -> Iterator[npt.NDArray[np.uint8]]:
        options = {"rtsp_transport": "tcp"} if self.location.startswith("rtsp") else {}
        with av.open(self.location, options=options, timeout=(10.0, 5.0)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                image: npt.NDArray[np.uint8] = frame.to_ndarray(format="rgb24")  # type: ignore[assignment]
                yield image
