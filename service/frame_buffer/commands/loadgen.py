"""``frame-buffer loadgen``: publish synthetic frames at a paced rate, with progress and a summary.

Which groups it declares matters: publish waits while a group's backlog reaches ``max_lag``, so frames for a
group nobody consumes stop the run there. It says at start which groups it declares, and at the end why
frames were not published: backpressure from a group (with its backlog and what to do) or a backend that
did not answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from frame_buffer.commands.common import (
    add_queue_options,
    address,
    frame_size,
    integer,
    name,
    number,
    preflight,
    settings_from,
)
from frame_buffer.config import Settings
from frame_buffer.errors import EXIT_FAILED, EXIT_UNREACHABLE, FrameBufferError
from frame_buffer.flow.producer import Producer
from frame_buffer.frame import Frame
from frame_buffer.queue import BackpressureTimeout
from frame_buffer.sources.synthetic import PATTERN_PHASES, test_pattern
from frame_buffer.start_checks import check_frame_size


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("loadgen", help="publish synthetic frames at a paced rate")
    add_queue_options(parser)
    parser.add_argument("--fps", type=number(0, 1e6), default=100.0,
                        help="frames per second over all cameras, 0 = as fast as the backend takes them")
    parser.add_argument("--duration", type=number(0, 86_400, low_open=True), default=10.0, help="seconds to run")
    parser.add_argument("--size", type=frame_size, default="640x480", help="frame size WIDTHxHEIGHT (RGB uint8)")
    parser.add_argument("--cameras", type=integer(1, 10_000), default=1, help="cameras, round-robin")
    parser.add_argument("--batch", type=integer(1, 10_000), default=32, help="most frames per publish round trip")
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument("--group", dest="groups", action="append", type=name, metavar="GROUP",
                        help="declare this consumer group, so frames are kept for it; repeat for several "
                        "(default: the configured group, FRAME_BUFFER_GROUP, else workers)")
    groups.add_argument("--no-group", action="store_true",
                        help="declare no group (see the README: what is kept then depends on the backend)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.set_defaults(func=run)


def declared_groups(args: argparse.Namespace, settings: Settings) -> tuple[str, ...]:
    """The groups this run declares: --group's, none with --no-group, else the configured one."""
    if args.no_group:
        return ()
    return tuple(dict.fromkeys(args.groups)) if args.groups else (settings.group,)


def groups_line(settings: Settings, groups: tuple[str, ...]) -> str:
    """What the run declares and what publish waits for, per backend (one line for stderr)."""
    where = f"{settings.backend}:{settings.stream}"
    if groups:
        names = ", ".join(repr(group) for group in groups)
        waits = "any group of the stream" if settings.backend == "redis" else "one of them"
        return (f"loadgen: declares group{'s' if len(groups) > 1 else ''} {names} on {where}; publish waits while "
                f"{waits} has a backlog of max_lag {settings.max_lag} (consume with: frame-buffer consume "
                f"--group {groups[0]})")
    meaning = {
        "redis": "entries stay in the stream for the first group created (it starts at the oldest entry); "
                 "publish waits while a group of the stream, or the stream itself when it has none, holds",
        "rabbitmq": f"frames go to the group queues already bound, or to {settings.stream}:unrouted, which the "
                    f"first group declared takes over; publish waits while {settings.stream}:unrouted holds",
        "memory": "frames stay in this process's memory queue and end with it; publish waits while it holds",
    }[settings.backend]
    return f"loadgen: declares no group on {where}: {meaning} max_lag {settings.max_lag} entries"


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    shape = (*args.size, 3)
    check_frame_size(settings, shape, "--size")
    groups = declared_groups(args, settings)
    preflight(settings, groups, outage_ok=True)
    print(groups_line(settings, groups), file=sys.stderr, flush=True)
    phases = [test_pattern(shape, phase) for phase in range(PATTERN_PHASES)]
    # The same stack as the service: adaptive buffer, breaker and spool, so a run rides through an outage.
    producer = Producer(lambda: settings.open_queue(groups), policy=settings.policy,
                        budget_bytes=settings.buffer_budget_bytes, block_timeout_s=settings.publish_timeout_s,
                        batch=args.batch, codec=settings.codec())
    submitted = 0
    refused = 0  # frames submit() gave back after waiting publish_timeout_s (backpressure)
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
            try:
                producer.submit(Frame(f"cam{camera}", seq, phases[seq % PATTERN_PHASES]))
            except BackpressureTimeout:
                refused += 1
                break  # the backend stayed full for publish_timeout_s: more would wait as long again
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
              "dropped": summary["dropped"], "stream": settings.stream, "backend": settings.backend,
              "groups": list(groups), "backpressure_waits": summary["backpressure_waits"]}
    print(f"published {published} frames in {seconds:.2f}s ({result['fps']} frames/s) to "
          f"{settings.backend}:{settings.stream}; dropped {summary['dropped'] or 0}")
    if args.json:
        print(json.dumps(result))
    unpublished = int(summary["dropped"].get("shutdown_timeout", 0))
    if not unpublished and not refused:
        return 0
    print(why_unpublished(settings, groups, summary, unpublished, refused), file=sys.stderr)
    return EXIT_UNREACHABLE if _unreachable(summary) else EXIT_FAILED


def _unreachable(summary: dict[str, Any]) -> bool:
    """The backend failed calls and the run ended degraded: an outage, not backpressure."""
    return bool(summary["publish_failures"]) and bool(summary["degraded"])


def why_unpublished(settings: Settings, groups: tuple[str, ...], summary: dict[str, Any], unpublished: int,
                    refused: int) -> str:
    """The last line of a run that could not publish everything: an outage, or backpressure and from whom."""
    count = f"{unpublished + refused} frames not published"
    if _unreachable(summary):
        return (f"frame-buffer loadgen: {count}: {address(settings)} did not answer "
                f"({summary['publish_failures']} failed publish calls; the breaker's log lines above say why); "
                "retry when it is back")
    if not summary["backpressure_waits"] and not refused:
        return (f"frame-buffer loadgen: {count}: {address(settings)} took them too slowly to publish within "
                f"drain_timeout_s {settings.drain_timeout_s}")
    backlog, slowest = _backlogs(settings, groups)
    if groups:
        advice = (f"start a consumer of that group (frame-buffer consume --group {slowest}), or pass --group "
                  "with the group you consume, or --no-group")
    else:
        advice = "consume the stream with some group (frame-buffer consume --group G), or raise FRAME_BUFFER_MAX_LAG"
    return (f"frame-buffer loadgen: {count}: backpressure: {backlog}, at or over max_lag "
            f"{settings.max_lag}, and nothing was acknowledged for publish_timeout_s {settings.publish_timeout_s:g} s;"
            f" {advice}")


def _backlogs(settings: Settings, groups: tuple[str, ...]) -> tuple[str, str]:
    """The backlog backpressure waited on, as the backend sees it now (the slowest declared group's, or the
    stream's length when no group was declared), and that group."""
    slowest = groups[0] if groups else ""
    try:
        queue = settings.open_queue(())
        try:
            if not groups:
                return f"the stream holds {queue.stats(settings.group).depth} entries", slowest
            backlog, slowest = max((queue.stats(group).backlog, group) for group in groups)
        finally:
            queue.close()
    except FrameBufferError as exc:
        return f"a group's backlog (not read: {exc})", slowest
    which = "group" if len(groups) == 1 else "the slowest group,"
    return f"{which} {slowest!r} has a backlog of {backlog} entries", slowest
