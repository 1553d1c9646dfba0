"""A producer process on the shared-memory payload store: publishes ``count`` frames whose every byte is
``seq % 251`` (the frame says which frame it is), printing each id on stdout.

``then``: ``exit`` when done, or ``hold``: wait on stdin (the test SIGKILLs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from frame_buffer.frame import Frame
from frame_buffer.queue import QueueSettings
from frame_buffer.queue.redis_streams.shm import ShmStreamsQueue


def frame(seq: int, nbytes: int) -> Frame:
    return Frame("cam", seq, np.full(nbytes, seq % 251, np.uint8))


def main() -> None:
    url, stream, shm_dir, shm_bytes, count, nbytes, then = sys.argv[1:8]
    queue = ShmStreamsQueue(url, QueueSettings(stream=stream, publish_timeout_s=120), store_root=Path(shm_dir),
                            store_bytes=int(shm_bytes))
    for seq in range(int(count)):
        print(queue.publish(frame(seq, int(nbytes))), flush=True)
    if then == "hold":
        sys.stdin.read()
    queue.close()


if __name__ == "__main__":
    main()
