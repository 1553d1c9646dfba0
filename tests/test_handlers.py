"""The default handler (``record_stats``): what it keeps per camera, for every frame type it may be given."""

from __future__ import annotations

import numpy as np
import pytest

from frame_buffer.frame import Frame
from frame_buffer.handlers import FRAME_STATS, record_stats


@pytest.mark.parametrize("shape", [(184, 184, 3), (0, 3), (4,)])
def test_the_default_handler_keeps_the_mean_brightness_of_uint8_and_float_frames(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    for camera, data in ((f"u8-{shape}", image), (f"f32-{shape}", image.astype(np.float32))):
        record_stats(Frame(camera, 0, data))
        expected = float(image.mean()) if image.size else 0.0
        assert FRAME_STATS[camera]["brightness"] == pytest.approx(expected)
