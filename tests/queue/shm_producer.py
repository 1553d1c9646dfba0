"""A producer process on the shared-memory payload store: publishes ``count`` frames whose every byte is
``seq % 251`` (the frame says which frame it is), printing each id on stdout.

``then``: ``exit`` when done, or ``hold``: wait on stdin (the test SIGKILLs it).
"""

from __future__ import annotations

import sys

import numpy as np

from frame_buffer.frame import Frame
from frame_buffer.queue import QueueSettings
from frame_buffer.queue.redis_streams.shm import ShmStreamsQueue


def frame(seq: int, nbytes: int) -> Frame:
    return Frame("cam", seq, np.full(nbytes, seq % 251, np.uint8))


def main() -> None:
    url, stream, shm_dir, shm_bytes, count, nbytes, then = sys.argv[1:8]
    settings = QueueSettings(stream=stream, publish_timeout_s=120, payload_store="shm", shm_dir=shm_dir,
                             shm_bytes=int(shm_bytes))
    queue = ShmStreamsQueue(url, settings)
    for seq in range(int(count)):
        print(queue.publish(frame(seq, int(nbytes))), flush=True)
    if then == "hold":
        sys.stdin.read()
    queue.close()


if __name__ == "__main__":
    main()
