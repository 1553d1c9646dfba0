"""``frame-buffer soak``: run sources, producer and workers together for a while and watch for slow failures.

The service runs as ``run`` runs it: sources and producer in this process, the workers as threads here or, with
``--worker-processes N``, in N child processes (``worker_processes.py``). Every ``--interval`` a row
(``sampling.py``): frames/s, end-to-end p50/p99 of that interval, the RSS of every process, Redis
``used_memory``, the stream's length and the producer's held bytes. After the stop it audits every frame across
the processes (the children report their final counts after their drain) and prints where the time went.

The verdict (``verdict.py``) lists each check with its value and limit; exit 1 when one fails: frames missing
(published != acked + still queued) or left pending, an unclean stop, a restarted thread or process, an
interval after the warm-up whose p99 or acked rate misses its target, or memory (total RSS, Redis
``used_memory``) growing faster than its limit per hour on a least-squares fit over the samples after the
warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from typing import Any

from frame_buffer.commands import stages
from frame_buffer.commands.common import add_queue_options, frame_size, integer, number, settings_from
from frame_buffer.commands.soak import verdict
from frame_buffer.commands.soak.sampling import Sampler
from frame_buffer.commands.stages import counter_total
from frame_buffer.errors import ConfigError
from frame_buffer.queue import FrameQueue
from frame_buffer.queue.redis_streams import RedisQueue
from frame_buffer.service import Service
from frame_buffer.start_checks import check_frame_size

#: Share of the run that is warm-up when --warmup is not given (at least one interval).
WARMUP_SHARE = 0.1
#: How long the soak waits for its worker processes to start before its clock starts anyway.
START_LIMIT_S = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("soak", help="run everything together and watch throughput, latency, memory")
    add_queue_options(parser)
    parser.add_argument("--duration", type=number(0, 7 * 86_400, low_open=True), default=60.0, help="seconds to run")
    parser.add_argument("--fps", type=number(0, 100_000, low_open=True), default=30.0,
                        help="frames per second per camera")
    parser.add_argument("--cameras", type=integer(1, 64), default=2, help="synthetic cameras")
    parser.add_argument("--size", type=frame_size, default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--workers", type=integer(1, 1024), default=2, help="consumer threads (in each process)")
    parser.add_argument("--worker-processes", type=integer(0, 256), default=None,
                        help="run the workers in N child processes (default: FRAME_BUFFER_WORKER_PROCESSES, "
                             "else 0: threads of this process)")
    parser.add_argument("--interval", type=number(0, 86_400, low_open=True), default=5.0,
                        help="seconds between samples (60 for an hour's run)")
    parser.add_argument("--warmup", type=number(0, 7 * 86_400), default=None,
                        help="seconds at the start that no check judges (default: 10%% of --duration, at least "
                             "one --interval)")
    parser.add_argument("--p99-limit-ms", type=number(0, 1e9, low_open=True), default=10.0,
                        help="end-to-end p99 limit of every interval after the warm-up")
    parser.add_argument("--min-rate", type=number(0, 1), default=0.95,
                        help="acked frames/s of every interval after the warm-up, as a share of what the "
                             "sources offer")
    parser.add_argument("--max-rss-slope-mb-per-h", type=number(0, 1e9), default=10.0,
                        help="limit of the growth of the summed RSS of all processes, least-squares, MB per hour "
                             "(10: a day's growth under 240 MB, about the service's own size)")
    parser.add_argument("--max-redis-slope-mb-per-h", type=number(0, 1e9), default=20.0,
                        help="limit of the growth of Redis used_memory, least-squares, MB per hour (20: a day's "
                             "growth under half of the deployed maxmemory of 1 GB)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stream = args.stream or f"soak_{uuid.uuid4().hex[:8]}"
    rows, columns = args.size
    sources = tuple(f"synthetic:cam{i}:fps={args.fps}:size={columns}x{rows}" for i in range(args.cameras))
    settings = settings_from(args, workers=args.workers, worker_processes=args.worker_processes).replace(
        stream=stream, sources=sources, http_port=0, http_host="127.0.0.1", group="soak")
    check_frame_size(settings, (rows, columns, 3), "--size")
    if settings.role != "all":
        raise ConfigError("soak runs the sources and the workers it audits (role all, with worker processes if "
                          "asked); unset FRAME_BUFFER_ROLE for it")
    warmup = args.warmup if args.warmup is not None else max(WARMUP_SHARE * args.duration, args.interval)
    where = (f"{settings.worker_processes} worker process(es) x {args.workers} thread(s)"
             if settings.worker_processes else f"{args.workers} worker thread(s)")
    print(f"soak: declares group 'soak' on {settings.backend}:{stream}, consumed by {where}; warm-up {warmup:g} s",
          file=sys.stderr, flush=True)
    service = Service(settings)
    queue = settings.open_queue() if service.shared is None else service.shared
    try:
        return _soak(args, service, queue, warmup)
    finally:
        if isinstance(queue, RedisQueue) and args.stream is None:  # its own stream only, never one it was given
            queue.delete_keys()
        queue.close()


def _soak(args: argparse.Namespace, service: Service, queue: FrameQueue, warmup: float) -> int:
    group = service.settings.group
    baseline = service.metric_families()
    stages_before = stages.snapshot(baseline)
    service.start()
    _wait_for_worker_processes(service)
    sampler = Sampler(service, queue, group, baseline)
    samples: list[dict[str, Any]] = []
    print(sampler.header(), flush=True)
    try:
        while (now := time.monotonic()) < sampler.start + args.duration:
            time.sleep(min(args.interval, sampler.start + args.duration - now))
            samples.append(sampler.sample())
            print(sampler.line(samples[-1]), flush=True)
    finally:
        clean_stop = service.stop() == 0
    final = service.metric_families()  # the worker processes' final counts, reported after their drain
    stats = queue.stats(group)
    summary = service.producer.summary() if service.producer else {"published": 0}
    acked = int(counter_total(final, "frame_queue_acked") - counter_total(baseline, "frame_queue_acked"))
    restarts = int(counter_total(final, "frame_queue_thread_restarts")
                   - counter_total(baseline, "frame_queue_thread_restarts"))
    missing = int(summary["published"]) - acked - stats.lag - stats.pending
    # An interval is judged when it began after the warm-up.
    judged = [s for before, s in zip([0.0] + [r["t"] for r in samples], samples, strict=False) if before >= warmup]
    checks = [
        verdict.exact("missing frames (published - acked - left in queue - pending)", missing, 0),
        verdict.exact("pending at the end", stats.pending, 0),
        verdict.exact("clean stop", clean_stop, True),
        verdict.exact("threads and worker processes restarted", restarts, 0),
        verdict.latency_check(judged, args.p99_limit_ms),
        verdict.rate_check(judged, args.fps * args.cameras, args.min_rate),
        verdict.slope_check("RSS growth, all processes summed", judged, "rss_total_mb", args.max_rss_slope_mb_per_h),
    ]
    if isinstance(queue, RedisQueue):
        checks.append(verdict.slope_check("Redis used_memory growth", judged, "redis_used_mb",
                                          args.max_redis_slope_mb_per_h))
    ok = all(check.passed is not False for check in checks)
    result: dict[str, Any] = {
        "published": summary["published"], "acked": acked, "left_in_queue": stats.lag, "pending": stats.pending,
        "missing": missing, "dropped": summary.get("dropped", {}), "clean_stop": clean_stop, "restarts": restarts,
        "worker_processes": len(sampler.names) - 1, "warmup_s": warmup,
        "buffer_peak_mb": round(summary.get("peak_bytes", 0) / 2**20, 1),
        "rss_slopes_mb_per_h": verdict.slopes(judged, "rss_mb"), "checks": [c.as_dict() for c in checks],
        "passed": ok, "samples": samples, "stages": stages.breakdown(stages_before, stages.snapshot(final)),
    }
    stages.print_breakdown(result["stages"], sys.stdout)
    print(f"soak {'passed' if ok else 'FAILED'}: published {result['published']} acked {acked} left in queue "
          f"{stats.lag} pending {stats.pending} missing {missing}; checks after a warm-up of {warmup:g} s:")
    for check in checks:
        print(check.line())
    slopes = ", ".join(f"{name} {_show(slope)}" for name, slope in result["rss_slopes_mb_per_h"].items())
    print(f"  (RSS slope of each process, MB/h: {slopes})")
    if args.json:
        print(json.dumps(result))
    return 0 if ok else 1


def _wait_for_worker_processes(service: Service) -> None:
    """The clock starts once every worker process consumes: a child's interpreter takes seconds to start, and a
    soak of a few seconds would otherwise end before a child acked anything. The sources run meanwhile (the
    backlog shows in the first interval, which the warm-up covers). A child that does not start within
    :data:`START_LIMIT_S` is reported and the soak goes on: its restarts fail the verdict."""
    if service.processes is None:
        return
    began = time.monotonic()
    while (reasons := [r for r in service.processes.reasons() if r.endswith(" is starting")]):
        if time.monotonic() - began > START_LIMIT_S:
            print(f"soak: {'; '.join(reasons)} after {START_LIMIT_S:g} s; going on without waiting",
                  file=sys.stderr, flush=True)
            return
        time.sleep(0.1)
    print(f"soak: worker processes started in {time.monotonic() - began:.1f} s; the clock starts now",
          file=sys.stderr, flush=True)


def _show(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.1f}"
