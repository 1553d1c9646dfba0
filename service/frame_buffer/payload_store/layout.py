"""What the writer and the readers of a store agree on: where its files are and what a slot header holds.

A segment is one file ``seg-<16 hex digits>`` (a fresh random name per writer start, so a reference can never
meet a newer file of the same name). A slot starts on a 64-byte boundary with a 64-byte header, then the
payload:

======  =====  ==============================================================================
offset  bytes  field (little-endian)
======  =====  ==============================================================================
0       4      magic ``FBS1``
8       8      generation: 0 while the slot is being written or after it was released
16      8      payload length
======  =====  ==============================================================================

The writer sets the generation last when it commits and zeroes it first when it reserves or releases, so a
reader that finds the reference's generation there sees a committed payload that is still held.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from frame_buffer.codec import SLOT_ALIGN
from frame_buffer.errors import EXIT_CONFIG, FrameBufferError

#: Where stores live unless ``FRAME_BUFFER_SHM_DIR`` says otherwise: a tmpfs on Linux.
DEFAULT_ROOT = Path("/dev/shm/frame-buffer")
MAGIC = b"FBS1"
HEADER_BYTES = SLOT_ALIGN
#: The slot header's fields: magic, 4 spare bytes, generation, length.
SLOT_HEADER = struct.Struct("<4s4xQQ")
GENERATION_AT = 8
GENERATION = struct.Struct("<Q")
#: Map every page at once: otherwise the first lap through a segment takes a page fault per 4 KiB, which more
#: than doubled the cost of writing a Full HD frame (2.0 ms against 0.5 ms here); a 1 GiB map costs ~0.3 s once.
MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
LOCK_NAME = "writer.lock"
SEGMENT_GLOB = "seg-*"


class StoreError(FrameBufferError):
    """The store cannot be used: its directory, a second writer, no room on the tmpfs."""

    exit_code = EXIT_CONFIG


class StoreFull(StoreError):
    """No free slot of the size asked for right now: backpressure, once consumers catch up there is."""


def slot_bytes(length: int) -> int:
    """Bytes a slot of a ``length``-byte payload occupies: its header plus the payload, rounded up to 64."""
    return HEADER_BYTES + -(-length // SLOT_ALIGN) * SLOT_ALIGN


def store_directory(root: Path, stream: str) -> Path:
    """The directory of ``stream``'s store under ``root``."""
    return root / stream
