"""A producer that commits one payload, then dies half-way through writing the next: the test SIGKILLs it.

Prints, one JSON line each: the committed reference, then the reference the half-written slot would get.
Then waits on stdin, which the test never closes before the kill.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from frame_buffer.codec import PayloadRef
from frame_buffer.payload_store import StoreWriter


def show(ref: PayloadRef) -> None:
    print(json.dumps([ref.segment, ref.offset, ref.length, ref.generation]), flush=True)


def main() -> None:
    writer = StoreWriter(Path(sys.argv[1]), 1 << 20)
    show(writer.put(b"\x11" * 4096)[1])
    reservation = writer.reserve(4096)
    reservation.view[:2048] = b"\x22" * 2048  # half the frame written
    show(PayloadRef(reservation.segment, reservation.slot.offset, 4096, reservation.slot.generation))
    sys.stdin.read()


if __name__ == "__main__":
    main()
