"""Frames for tests: small moving patterns, distinct per camera and sequence number."""

from __future__ import annotations

import numpy as np

from frame_buffer.frame import Frame


def pattern(seq: int, shape: tuple[int, ...] = (8, 8, 3), dtype: str = "uint8") -> np.ndarray:
    """A deterministic, non-constant array that differs for every ``seq``."""
    size = int(np.prod(shape))
    values = (np.arange(size, dtype=np.uint64) * 7 + seq * 13) % 251
    return values.astype(dtype).reshape(shape)


def make_frames(count: int, cameras: int = 1, shape: tuple[int, ...] = (8, 8, 3)) -> list[Frame]:
    """``count`` frames round-robin over ``cameras`` cameras, with per-camera sequence numbers."""
    frames = []
    for i in range(count):
        camera = f"cam{i % cameras}"
        seq = i // cameras
        frames.append(Frame(camera=camera, seq=seq, data=pattern(seq, shape), meta={"i": i}))
    return frames
