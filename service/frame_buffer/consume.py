"""``frame-buffer consume``: consume and ack frames, then print frames, rate and end-to-end latency."""

from __future__ import annotations

import argparse
import json
import socket
import time

from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.stats import percentiles_ms


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("consume", help="consume and ack frames, print a summary")
    add_queue_options(parser)
    parser.add_argument("--group", default="workers", help="consumer group")
    parser.add_argument("--consumer", default=f"{socket.gethostname()}-consume",
                        help="stable consumer name (default: <host>-consume)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = no limit)")
    parser.add_argument("--idle-exit", type=float, default=5.0, help="stop after this many seconds without frames")
    parser.add_argument("--batch", type=int, default=32, help="frames per consume call")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    queue = queue_from(settings)
    latencies: list[float] = []
    consumed = 0
    first = last = time.monotonic()
    dead_before = queue.stats(args.group).dead_letters
    try:
        while not args.max_frames or consumed < args.max_frames:
            want = args.batch if not args.max_frames else min(args.batch, args.max_frames - consumed)
            batch = queue.consume(args.group, args.consumer, count=want, block_ms=200)
            now = time.monotonic()
            if not batch:
                if now - last >= args.idle_exit:
                    break
                continue
            if consumed == 0:
                first = now
            wall_ns = time.time_ns()
            latencies.extend((wall_ns - d.frame.ts_ns) / 1e6 for d in batch)
            queue.ack(batch)
            consumed += len(batch)
            last = now
        dead_lettered = queue.stats(args.group).dead_letters - dead_before
    finally:
        queue.close()
    seconds = max(last - first, 1e-9)
    summary = {"consumed": consumed, "fps": round(consumed / seconds, 1) if consumed > 1 else 0.0,
               "dead_lettered": dead_lettered, "latency_ms": percentiles_ms(latencies)}
    lat = summary["latency_ms"]
    print(f"consumed {consumed} frames ({summary['fps']} frames/s), dead-lettered {dead_lettered}, "
          f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms p99.9 {lat['p999']} ms")  # type: ignore[index]
    if args.json:
        print(json.dumps(summary))
    return 0
