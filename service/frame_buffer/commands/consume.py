"""``frame-buffer consume``: consume and ack frames, then print frames, rate and end-to-end latency.

It declares only the group it reads (a group that does not exist yet starts at the oldest entry the stream
still holds), and says so at start. The rate is measured from the start of the first fetch that returned
frames to the end of the last one; with fewer than two batches there is no interval to measure it over,
and it is reported as null ("n/a").
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from frame_buffer.commands.common import add_queue_options, integer, name, number, settings_from
from frame_buffer.stats import percentiles_ms, rate


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("consume", help="consume and ack frames, print a summary")
    add_queue_options(parser)
    parser.add_argument("--group", type=name,
                        help="consumer group (default: the configured group, FRAME_BUFFER_GROUP, else workers)")
    parser.add_argument("--consumer", type=name, default=f"{socket.gethostname()}-consume",
                        help="stable consumer name")
    parser.add_argument("--max-frames", type=integer(0), default=0, help="stop after this many frames (0 = no limit)")
    parser.add_argument("--idle-exit", type=number(0, 86_400), default=5.0,
                        help="stop after this many seconds without frames")
    parser.add_argument("--batch", type=integer(1, 10_000), default=32, help="frames per consume call")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    group = args.group or settings.group
    queue = settings.open_queue((group,))
    latencies: list[float] = []
    consumed = batches = 0
    try:
        dead_before = queue.stats(group).dead_letters  # first: a server that is not there fails before we talk
        print(f"consume: reads group {group!r} of {settings.backend}:{settings.stream} as {args.consumer} "
              f"(declared if missing: it then starts at the oldest entry held)", file=sys.stderr, flush=True)
        first = last = time.monotonic()
        while not args.max_frames or consumed < args.max_frames:
            want = args.batch if not args.max_frames else min(args.batch, args.max_frames - consumed)
            called = time.monotonic()
            batch = queue.consume(group, args.consumer, count=want, block_ms=200)
            now = time.monotonic()
            if not batch:
                if now - last >= args.idle_exit:
                    break
                continue
            if batches == 0:
                first = called
            wall_ns = time.time_ns()
            latencies.extend((wall_ns - d.frame.ts_ns) / 1e6 for d in batch)
            queue.ack(batch)
            consumed += len(batch)
            batches += 1
            last = time.monotonic()
        dead_lettered = queue.stats(group).dead_letters - dead_before
    finally:
        queue.close()
    fps = rate(consumed, last - first) if batches >= 2 else None
    lat = percentiles_ms(latencies)
    summary = {"consumed": consumed, "fps": fps, "batches": batches, "dead_lettered": dead_lettered,
               "latency_ms": lat}
    print(f"consumed {consumed} frames ({'n/a' if fps is None else fps} frames/s), dead-lettered {dead_lettered}, "
          f"latency p50 {lat['p50']} ms p99 {lat['p99']} ms p99.9 {lat['p999']} ms")
    if args.json:
        print(json.dumps(summary))
    return 0
