""":class:`ShmStreamsQueue`: the Redis backend with each payload in a same-host shared-memory store
(``FRAME_BUFFER_PAYLOAD_STORE=shm``, issue 18): the stream entry carries the header and a reference
(fields ``h`` and ``r``, docs/wire-format.md section 9), consumers read the payload as a read-only view of the
shared memory, without a copy.

* Publishing: the payload goes into a slot of the store (one copy; none for a frame rendered in a slot from
  :meth:`ShmStreamsQueue.reserve`), then the entry is added exactly as the inline backend adds one. The store
  is written by one process per stream, the first that publishes (consumers never take its lock).
* Backpressure: a full store trims (which releases slots) and waits like ``max_lag``, up to
  ``publish_timeout_s``, then :class:`BackpressureTimeout`.
* Release: the trim script also answers the oldest id any group still needs (the MINID it trims at); slots of
  older entries are reused, so a handler's view stays intact until its entry is acked or dead-lettered.
* Consuming: a reference that does not decode is dead-lettered as ``bad_reference``, one whose payload is gone
  (deleted store, reboot, reused slot) as ``payload_lost``; the consumer keeps going. A dead letter holds the
  payload itself (``p``), copied from the store, so it outlives the slot.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frame_buffer import metrics
from frame_buffer.codec import CodecError, EncodedFrame, FrameCodec, decode_ref, encode_ref
from frame_buffer.payload_store import Reservation, StoreFull, StoreReader, StoreWriter
from frame_buffer.payload_store.layout import store_directory
from frame_buffer.payload_store.ring import Slot
from frame_buffer.queue.base import Delivery, QueueSettings, RawEntry
from frame_buffer.queue.redis_streams.entries import HEADER, REF, id_to_str
from frame_buffer.queue.redis_streams.progress import TRIM_NEEDED_SCRIPT
from frame_buffer.queue.redis_streams.queue import RedisStreamsQueue
from frame_buffer.queue.settings import DEFAULT_REDIS_URL


class ShmStreamsQueue(RedisStreamsQueue):
    """:class:`RedisStreamsQueue` whose payloads live in a store of ``settings.shm_bytes`` under
    ``settings.shm_dir``/<stream>; ``options`` are :class:`RedisStreamsQueue`'s.

    Producers and consumers must share the host (and the tmpfs): a reference means nothing elsewhere.
    """

    _trim_script = TRIM_NEEDED_SCRIPT

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        **options: Any,
    ) -> None:
        super().__init__(url, settings, codec, **options)
        self.store_directory = store_directory(Path(self.settings.shm_dir), self.settings.stream)
        self.store_bytes = self.settings.shm_bytes
        self._writer: StoreWriter | None = None
        self._reader = StoreReader(self.store_directory)

    @property
    def writer(self) -> StoreWriter:
        """The store's writer, opened by the first publish or reservation of this instance."""
        if self._writer is None:
            self._writer = StoreWriter(self.store_directory, self.store_bytes)
        return self._writer

    # -- publishing -------------------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> Reservation:
        """A slot to render a frame's ``nbytes`` into (``reservation.array(shape, dtype)``); publishing a frame
        whose data is that array sends it without a copy. Waits while the store is full, as publish does."""
        return self._reserve(nbytes, time.monotonic() + self.settings.publish_timeout_s)

    def cancel(self, reservation: Reservation) -> None:
        """Give a reservation back unpublished (its frame was dropped)."""
        self.writer.cancel(reservation)

    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Store each payload, then publish headers and references; a failed publish gives the slots back."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        stored: list[tuple[Slot, int]] = []
        referenced = []
        try:
            for camera, encoded in entries:
                slot, ref = self._store(encoded.payload, deadline)
                stored.append((slot, ref.length))
                referenced.append((camera, EncodedFrame(encoded.header, encode_ref(ref))))
                self._bytes_since_trim += slot.size  # trims (which release slots) follow the payload volume
            ids = super().publish_encoded(referenced)
        except BaseException:
            for slot, length in reversed(stored):
                self.writer.abort(slot, length)
            raise
        for (slot, _length), entry_id in zip(stored, ids, strict=True):
            self.writer.bind(slot, entry_id)
        return ids

    def _store(self, payload: bytes | memoryview, deadline: float) -> tuple[Slot, Any]:
        adopted = self.writer.adopt(payload)
        if adopted is not None:
            return adopted
        reservation = self._reserve(memoryview(payload).nbytes, deadline)
        reservation.view[:] = memoryview(payload).cast("B")
        return reservation.slot, self.writer.commit(reservation)

    def _reserve(self, nbytes: int, deadline: float) -> Reservation:
        writer = self.writer
        while True:
            try:
                return writer.reserve(nbytes)
            except StoreFull:
                self.trim()  # releases what every group is done with
            try:
                return writer.reserve(nbytes)
            except StoreFull as exc:
                self._wait_or_timeout(deadline, str(exc))

    def _entry_fields(self, encoded: EncodedFrame) -> dict[bytes, bytes | memoryview]:
        return {HEADER: encoded.header, REF: encoded.payload}

    def _after_trim(self, reply: Any) -> int:
        if not isinstance(reply, list):
            return super()._after_trim(reply)  # no stream or no group yet (or an error): nothing released
        trimmed, needed = reply
        if self._writer is not None:
            self._writer.release_before(id_to_str(needed))
        return int(trimmed)

    # -- consuming --------------------------------------------------------------------------------------
    def _decode_or_dead_letter(
        self, group: str, consumer: str, raw: list[RawEntry], received_ns: int
    ) -> list[Delivery]:
        """Find each referenced payload in the store first; what cannot be found is dead-lettered here."""
        found = []
        for entry in raw:
            if entry.ref is None or entry.payload is not None:
                found.append(entry)  # an inline entry (a replayed dead letter, an inline producer) is read as one
                continue
            try:
                view = self._reader.view(decode_ref(entry.ref))
            except CodecError as exc:
                self._dead_letter(group, entry, exc.reason, str(exc))
                metrics.dead_lettered.labels(reason=exc.reason).inc()
                continue
            found.append(dataclasses.replace(entry, payload=view))
        return super()._decode_or_dead_letter(group, consumer, found, received_ns)

    def delete_keys(self) -> int:
        """Delete the stream and its dead letters (a command's own stream) and the stream's store with them:
        nothing refers to its payloads any more."""
        deleted = super().delete_keys()
        if self._writer is not None:
            self._writer.close(remove=True)
            self._writer = None
        shutil.rmtree(self.store_directory, ignore_errors=True)
        return deleted

    def close(self) -> None:
        """Close the connection; unmap the store (its files stay: entries still refer to them)."""
        super().close()
        self._reader.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
