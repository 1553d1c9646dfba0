"""The value that travels through the buffer: one video frame and what is known about it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Metadata values are kept small and msgpack-native.
MetaValue = str | int | float | bool | None


@dataclass(slots=True)
class Frame:
    """One frame from one camera. Treat it as immutable.

    Not a frozen dataclass: a frozen ``__init__`` costs about 4 us more per frame, paid twice per frame.

    Args:
        camera: camera id; also the ordering key (frames of one camera stay in order).
        seq: sequence number within the camera, assigned by the source.
        data: the image as a numpy array, or already-encoded bytes (JPEG, H.264 NAL units, ...).
        ts_ns: capture time in nanoseconds since the epoch (``time.time_ns()``), used for end-to-end latency.
        meta: small free-form metadata (exposure, source url, ...).
    """

    camera: str
    seq: int
    data: npt.NDArray[Any] | bytes | memoryview
    ts_ns: int = field(default_factory=time.time_ns)
    meta: dict[str, MetaValue] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Size of the payload in bytes (before any compression)."""
        if isinstance(self.data, np.ndarray):
            return int(self.data.nbytes)
        return len(self.data) if isinstance(self.data, bytes) else self.data.nbytes
