"""The reading side: a reference from a stream entry to a read-only view of the payload, or ``payload_lost``.

A reference comes from outside (anyone can XADD), so it is decoded by the codec's total :func:`decode_ref`
(the segment name can only be ``seg-`` and hex digits: never a path), and resolving checks the slot against
the mapped file's size before reading its header. Refused, never read: a segment that is not there (deleted,
a reboot), a slot whose header does not carry the reference's generation (reused, released, or never
committed: a producer killed mid-write) or its length.

The view stays valid while the entry is pending: the writer reuses a slot only once every group acked or
dead-lettered its entry. A handler that keeps pixels after its ack must copy them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from frame_buffer.codec import CodecError, PayloadRef
from frame_buffer.payload_store.layout import HEADER_BYTES, MAGIC, MAP_POPULATE, SLOT_HEADER

#: Mapped segments a reader keeps; the oldest is unmapped when another is opened (if no view of it is left).
MAX_MAPPED = 4


class PayloadLost(CodecError):
    """The payload a reference names is not in the store any more (or never was): reason ``payload_lost``."""

    def __init__(self, message: str) -> None:
        super().__init__("payload_lost", message)


class StoreReader:
    """Resolves references into the store in ``directory``; maps each segment read-only, once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._maps: dict[str, mmap.mmap] = {}

    def view(self, ref: PayloadRef) -> memoryview:
        """The payload ``ref`` names, as a read-only view of the shared memory (no copy); :class:`PayloadLost`."""
        segment = self._segment(ref.segment)
        end = ref.offset + HEADER_BYTES + ref.length
        if end > len(segment):
            raise PayloadLost(f"{ref.segment}: slot at {ref.offset} of {ref.length} bytes ends past the segment's "
                              f"{len(segment)} bytes")
        magic, generation, length = SLOT_HEADER.unpack_from(segment, ref.offset)
        if magic != MAGIC or generation != ref.generation or length != ref.length:
            raise PayloadLost(f"{ref.segment}: slot at {ref.offset} holds generation {generation}, "
                              f"not {ref.generation}: reused, released or never committed")
        start = ref.offset + HEADER_BYTES
        return memoryview(segment)[start:end]

    def _segment(self, name: str) -> mmap.mmap:
        mapped = self._maps.get(name)
        if mapped is not None:
            return mapped
        try:
            fd = os.open(self.directory / name, os.O_RDONLY)
        except OSError as exc:
            raise PayloadLost(f"segment {name} of {self.directory}: {exc.strerror or exc}") from exc
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise PayloadLost(f"segment {name} of {self.directory} is empty")
            mapped = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | MAP_POPULATE, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        if len(self._maps) >= MAX_MAPPED:
            self._unmap_oldest()
        self._maps[name] = mapped
        return mapped

    def _unmap_oldest(self) -> None:
        name = next(iter(self._maps))
        with contextlib.suppress(BufferError):  # a view is still held: the mapping lives on with it
            self._maps[name].close()
        del self._maps[name]

    def close(self) -> None:
        """Unmap what no view holds any more; mappings with views left go when the views do."""
        while self._maps:
            self._unmap_oldest()
