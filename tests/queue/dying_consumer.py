"""A consumer that takes one batch, reports its ids on stdout, and never acks: the test SIGKILLs it."""

from __future__ import annotations

import json
import sys
import time

from frame_buffer.queue import QueueSettings
from tests.conftest import open_backend


def main() -> None:
    backend, url, stream, group, consumer, count = sys.argv[1:7]
    queue = open_backend(backend, url, QueueSettings(stream=stream))
    deliveries = queue.consume(group, consumer, count=int(count), block_ms=5000)
    print(json.dumps([d.id for d in deliveries]), flush=True)
    while True:  # hold the batch, unacked, until killed
        time.sleep(60)


if __name__ == "__main__":
    main()
