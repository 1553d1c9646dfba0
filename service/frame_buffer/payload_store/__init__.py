"""A same-host payload store in shared memory: the claim check of ``FRAME_BUFFER_PAYLOAD_STORE=shm`` (issue 18).

A producer writes each payload into a slot of a file under ``<root>/<stream>/`` (``/dev/shm/frame-buffer`` by
default, a tmpfs) and publishes only the header plus a :class:`~frame_buffer.codec.PayloadRef`; consumers on
the same host map the file read-only and get the payload as a zero-copy, read-only view.

One concept per module: :mod:`.layout` (the slot header and file names both sides agree on), :mod:`.ring` (which
bytes of a segment are free: a ring of slots released in publish order), :mod:`.writer` (the one producer
of a stream: reserve, write, commit, bind to the entry id, release) and :mod:`.reader` (resolving a
reference to a view, refusing a slot that is gone or was reused: ``payload_lost``).

The release rule: a slot is reused only when the stream entry that refers to it is older than the oldest entry
any consumer group still needs, the id MINID trimming uses; so every group has acked or dead-lettered it.
"""

from frame_buffer.payload_store.layout import DEFAULT_ROOT, StoreError, StoreFull
from frame_buffer.payload_store.reader import PayloadLost, StoreReader
from frame_buffer.payload_store.writer import Reservation, StoreWriter

__all__ = ["DEFAULT_ROOT", "PayloadLost", "Reservation", "StoreError", "StoreFull", "StoreReader", "StoreWriter"]
