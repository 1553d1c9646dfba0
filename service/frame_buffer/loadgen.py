"""``frame-buffer loadgen``: publish synthetic frames at a paced rate, with progress and a summary."""

from __future__ import annotations

import argparse
import json
import sys
import time

from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.flow.producer import Producer
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
    parser.add_argument("--batch", type=int, default=32, help="most frames per publish round trip")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    shape = (*parse_size(args.size), 3)
    phases = [test_pattern(shape, phase) for phase in range(PATTERN_PHASES)]
    # The same stack as the service: adaptive buffer, breaker and spool, so a run rides through an outage.
    producer = Producer(lambda: queue_from(settings), policy=settings.policy,
                        budget_bytes=settings.buffer_budget_bytes, block_timeout_s=settings.publish_timeout_s,
                        batch=args.batch, codec=settings.codec())
    submitted = 0
    seqs = [0] * args.cameras
    start = time.monotonic()
    end = start + args.duration
    next_report = start + 1.0
    try:
        while (now := time.monotonic()) < end:
            if args.fps > 0 and submitted >= int((now - start) * args.fps) + 1:
                time.sleep(min(1 / args.fps, end - now))
                continue
            camera = submitted % args.cameras
            seq = seqs[camera]
            producer.submit(Frame(f"cam{camera}", seq, phases[seq % PATTERN_PHASES]))
            seqs[camera] += 1
            submitted += 1
            if now >= next_report:
                print(f"loadgen: {producer.published} published, {submitted / (now - start):.0f} frames/s offered"
                      + (" (degraded: spooling)" if producer.degraded else ""), file=sys.stderr, flush=True)
                next_report += 1.0
    finally:
        producer.close(settings.drain_timeout_s)
    seconds = time.monotonic() - start
    summary = producer.summary()
    published = int(summary["published"])
    result = {"published": published, "fps": round(published / seconds, 1), "seconds": round(seconds, 3),
              "dropped": summary["dropped"], "stream": settings.stream, "backend": settings.backend}
    print(f"published {published} frames in {seconds:.2f}s ({result['fps']} frames/s) to "
          f"{settings.backend}:{settings.stream}; dropped {summary['dropped'] or 0}")
    if args.json:
        print(json.dumps(result))
    unpublished = summary["dropped"].get("shutdown_timeout", 0)
    if unpublished:
        print(f"frame-buffer loadgen: {unpublished} frames could not be published to {settings.backend} "
              "before the drain timeout (see the breaker's log lines for the server's address)", file=sys.stderr)
        return 3
    return 0
