"""A consumer on the shared-memory store that takes one batch, reports its ids, holds its views unacked, and
waits on stdin: the test SIGKILLs it."""

from __future__ import annotations

import json
import sys

from frame_buffer.queue import QueueSettings
from frame_buffer.queue.redis_streams.shm import ShmStreamsQueue


def main() -> None:
    url, stream, shm_dir, group, count = sys.argv[1:6]
    queue = ShmStreamsQueue(url, QueueSettings(stream=stream, payload_store="shm", shm_dir=shm_dir))
    held = queue.consume(group, "doomed", count=int(count), block_ms=5000)
    print(json.dumps([d.id for d in held]), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
