"""``frame-buffer soak``: run sources, producer and workers together for a while and watch for slow failures.

Samples throughput, end-to-end latency (p50/p99 from the histogram, per interval) and RSS, and prints where the
time went at the end (p50/p99 of each stage of ``frame_queue_stage_seconds``, ``commands/stages.py``). Fails (exit 1)
when frames go missing (published != acked + still queued, or anything left pending) or when memory keeps
growing: RSS in the last quarter of the run more than ``--max-rss-growth-mb`` above the second quarter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from frame_buffer import metrics
from frame_buffer.commands import stages
from frame_buffer.commands.common import (
    add_queue_options,
    frame_size,
    integer,
    number,
    settings_from,
)
from frame_buffer.errors import ConfigError
from frame_buffer.service import Service
from frame_buffer.start_checks import check_frame_size


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("soak", help="run everything together and watch throughput, latency, memory")
    add_queue_options(parser)
    parser.add_argument("--duration", type=number(0, 7 * 86_400, low_open=True), default=60.0, help="seconds to run")
    parser.add_argument("--fps", type=number(0, 100_000, low_open=True), default=30.0,
                        help="frames per second per camera")
    parser.add_argument("--cameras", type=integer(1, 64), default=2, help="synthetic cameras")
    parser.add_argument("--size", type=frame_size, default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--workers", type=integer(1, 1024), default=2, help="consumer threads")
    parser.add_argument("--interval", type=number(0, 86_400, low_open=True), default=5.0,
                        help="seconds between samples")
    parser.add_argument("--max-rss-growth-mb", type=number(0, 1e6), default=50.0,
                        help="fail when RSS grows more than this between the second and the last quarter")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    parser.set_defaults(func=run)


def rss_mb() -> float:
    """Resident set size of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _counter(metric: Any) -> float:
    return sum(float(sample.value) for family in metric.collect() for sample in family.samples
               if sample.name.endswith("_total"))


def _buckets() -> list[tuple[float, float]]:
    family = next(iter(metrics.end_to_end_latency.collect()))
    return [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]


def run(args: argparse.Namespace) -> int:
    stream = args.stream or f"soak_{uuid.uuid4().hex[:8]}"
    rows, columns = args.size
    sources = tuple(f"synthetic:cam{i}:fps={args.fps}:size={columns}x{rows}" for i in range(args.cameras))
    settings = settings_from(args, workers=args.workers).replace(
        stream=stream, sources=sources, http_port=0, http_host="127.0.0.1", group="soak")
    check_frame_size(settings, (rows, columns, 3), "--size")
    if settings.worker_processes or settings.role != "all":
        # Its audit reads what this process acked and timed: workers elsewhere would make every frame "missing".
        raise ConfigError("soak runs sources and workers in its own process to audit every frame; unset "
                          "FRAME_BUFFER_WORKER_PROCESSES and FRAME_BUFFER_ROLE for it (not supported by soak yet)")
    print(f"soak: declares group 'soak' on {settings.backend}:{stream}, consumed by {args.workers} worker(s)",
          file=sys.stderr, flush=True)
    stages_before = stages.snapshot()
    service = Service(settings)
    service.start()
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    last_buckets: list[tuple[float, float]] = []
    last_acked, last_time = 0.0, start
    print(f"{'t s':>6} {'published':>10} {'acked':>10} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
    try:
        while (now := time.monotonic()) < start + args.duration:
            time.sleep(min(args.interval, start + args.duration - now))
            now = time.monotonic()
            buckets, acked = _buckets(), _counter(metrics.acked)
            sample = {"t": round(now - start, 1), "published": _counter(metrics.published), "acked": acked,
                      "fps": round((acked - last_acked) / (now - last_time), 1),
                      "p50_ms": round(stages.quantile_ms(last_buckets, buckets, 0.5), 2),
                      "p99_ms": round(stages.quantile_ms(last_buckets, buckets, 0.99), 2), "rss_mb": round(rss_mb(), 1)}
            samples.append(sample)
            last_buckets, last_acked, last_time = buckets, acked, now
            print(f"{sample['t']:>6} {sample['published']:>10.0f} {sample['acked']:>10.0f} {sample['fps']:>9} "
                  f"{sample['p50_ms']:>8} {sample['p99_ms']:>8} {sample['rss_mb']:>8}", flush=True)
    finally:
        clean_stop = service.stop() == 0
    queue = settings.open_queue() if service.shared is None else service.shared
    stats = queue.stats(settings.group)
    summary = service.producer.summary() if service.producer else {"published": 0}
    acked_total = sum(worker.acked for worker in service.workers)
    missing = int(summary["published"]) - acked_total - stats.lag - stats.pending
    quarter = max(1, len(samples) // 4)
    early = [s["rss_mb"] for s in samples[quarter: 2 * quarter]] or [0.0]
    late = [s["rss_mb"] for s in samples[-quarter:]] or [0.0]
    growth = max(late) - max(early)
    verdict: dict[str, Any] = {
        "published": summary["published"], "acked": acked_total, "left_in_queue": stats.lag,
        "pending": stats.pending, "missing": missing, "dropped": summary.get("dropped", {}),
        "rss_growth_mb": round(growth, 1), "clean_stop": clean_stop, "samples": samples,
        "stages": stages.breakdown(stages_before, stages.snapshot()),
    }
    if settings.backend == "redis" and args.stream is None:  # its own stream only, never one it was given
        queue.client.delete(stream, f"{stream}:dlq")  # type: ignore[attr-defined]
    queue.close()
    stages.print_breakdown(verdict["stages"], sys.stdout)
    ok = missing == 0 and stats.pending == 0 and growth <= args.max_rss_growth_mb and clean_stop
    print(f"soak {'passed' if ok else 'FAILED'}: published {verdict['published']} acked {acked_total} left in "
          f"queue {stats.lag} pending {stats.pending} missing {missing} RSS growth {growth:.1f} MB "
          f"(limit {args.max_rss_growth_mb})")
    if args.json:
        print(json.dumps(verdict))
    return 0 if ok else 1
