"""The writing side of a stream's store: one producer process, one segment file, a ring of slots in it.

Zero-copy writing: :meth:`StoreWriter.reserve` hands out a writable view of a slot (a source decodes or
renders straight into it), :meth:`StoreWriter.commit` seals it and returns the :class:`PayloadRef` to publish.
:meth:`StoreWriter.put` is reserve + one copy + commit. After the publish, :meth:`StoreWriter.bind` records the
entry id, and :meth:`StoreWriter.release_before` (called with the oldest id any group still needs) frees what
every group is done with.

Why the choices:

* Files under a tmpfs mapped with :mod:`mmap`, not ``multiprocessing.shared_memory``: Python 3.11's resource
  tracker unlinks an attached segment when any process that attached it exits (cpython gh-82300).
* ``posix_fallocate`` when the segment is made: a write into a sparse page of a full tmpfs is a SIGBUS, while
  fallocate fails cleanly (``StoreError``) before anything is written.
* One writer per stream (an ``flock``, released by the kernel even on SIGKILL): the ring is the writer's memory.
  A new writer makes a new segment and leaves the previous writer's segments readable; they are deleted once
  the oldest entry still needed is newer than this writer's first entry (every entry in them is older).
* A fresh random segment name per writer: a reference from before a reboot or a deleted store can never
  point into a new file, whatever its generation.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from frame_buffer.codec import PayloadRef
from frame_buffer.payload_store.layout import (
    GENERATION,
    GENERATION_AT,
    HEADER_BYTES,
    LOCK_NAME,
    MAGIC,
    MAP_POPULATE,
    SEGMENT_GLOB,
    SLOT_HEADER,
    StoreError,
    StoreFull,
    slot_bytes,
)
from frame_buffer.payload_store.ring import Ring, Slot


@dataclass(slots=True)
class Reservation:
    """A slot being written: fill :attr:`view` (or :meth:`array`), then :meth:`StoreWriter.commit` it."""

    slot: Slot
    segment: str
    length: int
    view: memoryview

    def array(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[np.generic]:
        """The slot as a writable array of ``shape`` and ``dtype`` (their size must be the reserved length)."""
        return np.frombuffer(self.view, dtype=dtype).reshape(shape)


def _parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StoreWriter:
    """The one writer of the store in ``directory``, with a segment of ``capacity`` bytes.

    Raises :class:`StoreError` when another process writes this store, or the tmpfs has no room for it.
    """

    def __init__(self, directory: Path, capacity: int) -> None:
        if capacity < HEADER_BYTES:
            raise StoreError(f"payload store of {capacity} bytes: must be at least {HEADER_BYTES}")
        self.directory = directory
        self.capacity = capacity
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(directory / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o640)
        except OSError as exc:
            raise StoreError(f"payload store {directory}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise StoreError(
                f"payload store {directory}: another process writes it (one producer per stream)") from None
        self._retired = sorted(directory.glob(SEGMENT_GLOB))  # earlier writers': readable until released
        self._first_id: tuple[int, int] | None = None
        self._generation = 0
        try:
            self._open_segment()
        except StoreError:
            os.close(self._lock)  # or a retry from this process would find the store "written by another"
            raise

    def _open_segment(self) -> None:
        self.segment = f"seg-{secrets.token_hex(8)}"
        path = self.directory / self.segment
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
        try:
            os.posix_fallocate(fd, 0, self.capacity)
            self._map = mmap.mmap(fd, self.capacity, flags=mmap.MAP_SHARED | MAP_POPULATE)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise StoreError(f"payload store {path}: {self.capacity} bytes: {exc.strerror or exc}") from exc
        self._fd = fd
        self._ring = Ring(self.capacity)
        self._open: dict[int, Reservation] = {}  # reservations not committed yet, by their payload's offset
        self._address = np.frombuffer(self._map, dtype=np.uint8).ctypes.data

    # -- writing ------------------------------------------------------------------------------------------
    def reserve(self, length: int) -> Reservation:
        """A slot for a payload of ``length`` bytes; raises :class:`StoreFull` when there is no room now
        (release, then ask again) and :class:`StoreError` when it could never fit."""
        size = slot_bytes(length)
        if size > self.capacity:
            raise StoreError(f"a payload of {length} bytes does not fit a store of {self.capacity} bytes")
        if os.fstat(self._fd).st_nlink == 0:  # the segment was deleted: its references are lost, start anew
            self._abandon()
            self._open_segment()
        offset = self._ring.fit(size)
        if offset is None:
            raise StoreFull(f"payload store {self.directory}: no room for {length} bytes ({self._ring.used} of "
                            f"{self.capacity} held by entries some consumer group has not acked)")
        self._generation += 1
        slot = Slot(offset, size, self._generation, segment=self.segment)
        self._ring.add(slot)
        SLOT_HEADER.pack_into(self._map, offset, MAGIC, 0, length)  # generation 0: being written
        return self._reopen(slot, length)

    def _reopen(self, slot: Slot, length: int) -> Reservation:
        start = slot.offset + HEADER_BYTES
        reservation = Reservation(slot, self.segment, length, memoryview(self._map)[start : start + length])
        self._open[start] = reservation
        return reservation

    def commit(self, reservation: Reservation) -> PayloadRef:
        """Seal a written slot: its generation goes into its header last; returns the reference to publish."""
        slot = reservation.slot
        self._open.pop(slot.offset + HEADER_BYTES, None)
        GENERATION.pack_into(self._map, slot.offset + GENERATION_AT, slot.generation)
        return PayloadRef(reservation.segment, slot.offset, reservation.length, slot.generation)

    def put(self, payload: bytes | memoryview) -> tuple[Slot, PayloadRef]:
        """Copy ``payload`` into a new slot and commit it (the one copy of ``submit(frame)``)."""
        data = memoryview(payload).cast("B")
        reservation = self.reserve(data.nbytes)
        reservation.view[:] = data
        return reservation.slot, self.commit(reservation)

    def owns(self, payload: bytes | memoryview) -> bool:
        """Whether ``payload`` lies in this writer's segment (a reservation's array): no copy needed then."""
        return self._offset_of(payload) is not None

    def _offset_of(self, payload: bytes | memoryview) -> int | None:
        if isinstance(payload, bytes) or not memoryview(payload).nbytes:
            return None
        address = np.frombuffer(payload, dtype=np.uint8).ctypes.data
        offset = address - self._address
        return offset if 0 <= offset < self.capacity else None

    def adopt(self, payload: bytes | memoryview) -> tuple[Slot, PayloadRef] | None:
        """Commit the open reservation ``payload`` is exactly (a frame rendered in place): no copy. ``None``
        when it is not one (then :meth:`put` it). If its publish fails, :meth:`abort` reopens it rather than
        freeing it, since the caller's frame still points at it; :meth:`cancel` frees it when the frame goes."""
        offset = self._offset_of(payload)
        reservation = None if offset is None else self._open.get(offset)
        if reservation is None or reservation.length != memoryview(payload).nbytes:
            return None
        reservation.slot.external = True
        return reservation.slot, self.commit(reservation)

    def cancel(self, reservation: Reservation) -> None:
        """Give up a reservation (its frame was dropped, or never written): its bytes are free again."""
        if reservation.slot.segment != self.segment:
            return
        self._open.pop(reservation.slot.offset + HEADER_BYTES, None)
        self._invalidate(reservation.slot)
        self._ring.abort(reservation.slot)

    # -- after publishing -----------------------------------------------------------------------------------
    def bind(self, slot: Slot, entry_id: str) -> None:
        """Record that the stream entry ``entry_id`` refers to ``slot`` (it is released by that id)."""
        slot.entry_id = _parse_id(entry_id)
        if self._first_id is None:
            self._first_id = slot.entry_id

    def abort(self, slot: Slot, length: int) -> None:
        """``slot``'s publish failed: no entry refers to it (one that was written all the same finds another
        generation there: ``payload_lost``, never these pixels). A slot :meth:`put` filled is free again; an
        adopted one is reopened, with a new generation, for the retry of the frame that lives in it."""
        if slot.segment != self.segment:
            return  # its segment was deleted under us and abandoned: nothing there to free or keep
        self._invalidate(slot)
        if slot.external:
            self._generation += 1
            slot.generation, slot.external = self._generation, False
            self._reopen(slot, length)
        else:
            self._ring.abort(slot)

    def release_before(self, needed: str) -> int:
        """Free every slot whose entry is older than ``needed`` (the oldest stream id any group still needs):
        every group acked or dead-lettered it. Returns the number of slots freed."""
        key = _parse_id(needed)
        released = self._ring.release_before(key)
        for slot in released:
            self._invalidate(slot)
        if self._retired and self._first_id is not None and self._first_id <= key:
            for path in self._retired:  # every entry of an earlier writer is older than our first
                path.unlink(missing_ok=True)
            self._retired = []
        return len(released)

    def _invalidate(self, slot: Slot) -> None:
        GENERATION.pack_into(self._map, slot.offset + GENERATION_AT, 0)

    def _abandon(self) -> None:
        self._ring.release_all()
        with contextlib.suppress(BufferError):  # a reservation still open keeps the old mapping alive
            self._map.close()
        os.close(self._fd)

    # -- inspection and lifecycle ---------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        """Bytes held by slots not yet released (headers and padding included)."""
        return self._ring.used

    @property
    def live_slots(self) -> int:
        """Slots not yet released."""
        return len(self._ring.live)

    def close(self, *, remove: bool = False) -> None:
        """Unmap and unlock; with ``remove`` delete the segment too (a store nobody reads any more)."""
        self._abandon()
        if remove:
            (self.directory / self.segment).unlink(missing_ok=True)
        os.close(self._lock)
