"""A consumer process for the fault tests: a Worker (Redis, standalone or cluster, or RabbitMQ) that logs every
frame it handled.

Each handled frame is appended to ``--out`` as ``camera seq attempts`` with one ``write`` (O_APPEND), so what a
SIGKILL leaves behind is whole lines. SIGTERM stops the worker cleanly (the batch in hand is finished
and acked) and prints its summary as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from types import FrameType

from frame_buffer.flow import CircuitBreaker, ExponentialBackoff, RetryPolicy, Worker
from frame_buffer.frame import Frame
from frame_buffer.queue import Delivery, FrameQueue, QueueSettings, open_queue
from frame_buffer.queue.redis_streams import RedisStreamsQueue, ShardedStreamsQueue


class AttemptsWorker(Worker):
    """A Worker whose handler can tell how often the frame in hand was delivered (the log records it)."""

    attempts: dict[int, int] = {}

    def _handle(self, queue: FrameQueue, deliveries: list[Delivery]) -> None:
        self.attempts = {id(delivery.frame): delivery.attempts for delivery in deliveries}
        super()._handle(queue, deliveries)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="redis", choices=("redis", "rabbitmq"))
    parser.add_argument("--url", required=True, help="a redis:// URL, or comma-separated seeds with --mode cluster")
    parser.add_argument("--mode", default="standalone", choices=("standalone", "cluster"))
    parser.add_argument("--shards", type=int, default=16, help="shard streams with --mode cluster")
    parser.add_argument("--stream", default="frame_queue")
    parser.add_argument("--group", default="g")
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds of 'work' per frame")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--claim-ms", type=int, default=30_000)
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--base", type=float, default=0.1)
    parser.add_argument("--cap", type=float, default=10.0)
    parser.add_argument("--hang-after", type=int, default=0, help="hang forever in the handler after N frames")
    parser.add_argument("--poison-meta", default="", help="raise on frames whose meta has this key")
    args = parser.parse_args()

    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    handled = 0

    def handler(frame: Frame) -> None:
        nonlocal handled
        if args.hang_after and handled >= args.hang_after:
            while True:  # holds its batch unacked until SIGKILL
                time.sleep(3600)
        if args.poison_meta and frame.meta.get(args.poison_meta):
            raise ValueError(f"poison frame {frame.camera}/{frame.seq}")
        if args.delay:
            time.sleep(args.delay)
        os.write(fd, f"{frame.camera} {frame.seq} {worker.attempts.get(id(frame), 1)}\n".encode())
        handled += 1

    settings = QueueSettings(stream=args.stream, groups=(args.group,), claim_min_idle_ms=args.claim_ms)

    def connect() -> FrameQueue:
        if args.backend == "redis" and args.mode == "cluster":
            return ShardedStreamsQueue(args.url, settings, shards=args.shards, cluster=True, max_block_ms=1000,
                                       block_margin_s=2.0)
        if args.backend == "redis":
            return RedisStreamsQueue(args.url, settings, max_block_ms=1000, block_margin_s=2.0)
        return open_queue(args.backend, amqp_url=args.url, settings=settings)

    worker = AttemptsWorker(
        connect,
        args.group, args.name, handler,
        retry=RetryPolicy(base_s=args.base, cap_s=args.cap, max_attempts=args.max_attempts),
        batch=args.batch, block_ms=200,
        breaker=CircuitBreaker(f"worker {args.name}", failure_threshold=1,
                               cooldown=ExponentialBackoff(0.05, 0.5), export_metrics=False),
    )
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    worker.run(stop)
    print(json.dumps(worker.summary()), flush=True)


if __name__ == "__main__":
    main()
