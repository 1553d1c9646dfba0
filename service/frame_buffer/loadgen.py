"""``frame-buffer loadgen``: publish synthetic frames at a paced rate, with progress and a summary."""

from __future__ import annotations

import argparse
import json
import sys
import time

from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.frame import Frame
from frame_buffer.sources import parse_size
from frame_buffer.sources.synthetic import PATTERN_PHASES, test_pattern


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("loadgen", help="publish synthetic frames at a paced rate")
    add_queue_options(parser)
    parser.add_argument("--fps", type=float, default=100.0, help="frames per second over all cameras (0 = unpaced)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT (RGB uint8)")
    parser.add_argument("--cameras", type=int, default=1, help="cameras, round-robin")
    parser.add_argument("--batch", type=int, default=8, help="most frames per publish call when catching up")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    shape = (*parse_size(args.size), 3)
    phases = [test_pattern(shape, phase) for phase in range(PATTERN_PHASES)]
    queue = queue_from(settings)
    published = 0
    seqs = [0] * args.cameras
    start = time.monotonic()
    end = start + args.duration
    next_report = start + 1.0
    try:
        while (now := time.monotonic()) < end:
            due = args.batch if args.fps <= 0 else int((now - start) * args.fps) + 1 - published
            if due <= 0:
                time.sleep(min(1 / args.fps, end - now))
                continue
            batch = []
            for _ in range(min(due, args.batch)):
                camera = published % args.cameras
                seq = seqs[camera]
                batch.append(Frame(f"cam{camera}", seq, phases[seq % PATTERN_PHASES]))
                seqs[camera] += 1
                published += 1
            queue.publish_many(batch)
            if now >= next_report:
                rate = published / (now - start)
                print(f"loadgen: {published} frames, {rate:.0f} frames/s", file=sys.stderr, flush=True)
                next_report += 1.0
    finally:
        queue.close()
    seconds = time.monotonic() - start
    summary = {"published": published, "fps": round(published / seconds, 1), "seconds": round(seconds, 3),
               "stream": settings.stream, "backend": settings.backend}
    print(f"published {published} frames in {seconds:.2f}s ({summary['fps']} frames/s) to "
          f"{settings.backend}:{settings.stream}")
    if args.json:
        print(json.dumps(summary))
    return 0
