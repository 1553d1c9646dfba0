#!/usr/bin/env python3
"""Micro-benchmark: what the stage timings (``frame_queue_stage_seconds``) add to the path, per frame.

Replays, per frame, the clock reads and observations the service makes (``flow/buffer.py``, ``flow/producer.py``,
``queue/base.py``, ``flow/worker.py``): six observations and ten clock reads; the per-batch clock reads of
publish, fetch and ack are left out (a batch of one would add three). Best of 7 runs of 100,000 frames, minus
an empty call. Run: ``PYTHONPATH=service .venv/bin/python scripts/stage_overhead.py``.
"""

from __future__ import annotations

import time
import timeit

from frame_buffer import metrics

STAGE = metrics.STAGE
FRAMES = 100_000


def per_frame() -> None:
    """The timing work one frame costs across its stages."""
    admitted = time.perf_counter_ns()  # buffer: stamped at append ...
    STAGE["buffer"].observe((time.perf_counter_ns() - admitted) / 1e9)  # ... observed at take
    STAGE["publish"].observe((time.perf_counter_ns() - admitted) / 1e9)
    started = time.perf_counter_ns()  # decode
    STAGE["decode"].observe((time.perf_counter_ns() - started) / 1e9)
    STAGE["capture_to_receive"].observe(max(time.time_ns() - admitted, 0) / 1e9)
    started = time.perf_counter_ns()  # handler
    STAGE["handler"].observe((time.perf_counter_ns() - started) / 1e9)
    STAGE["ack"].observe((time.perf_counter_ns() - started) / 1e9)


def counters_before() -> None:
    """For scale: the per-frame metrics the path had before the stages (published, consumed, acked, latency)."""
    metrics.published.labels(camera="cam0").inc()
    metrics.consumed.labels(camera="cam0", group="g").inc()
    metrics.end_to_end_latency.observe(0.003)
    metrics.acked.labels(camera="cam0", group="g").inc()


def nothing() -> None:
    """The call itself, subtracted."""


def best_us(function: object) -> float:
    return min(timeit.repeat(function, number=FRAMES, repeat=7)) / FRAMES * 1e6  # type: ignore[arg-type]


def main() -> None:
    empty = best_us(nothing)
    frame = best_us(per_frame) - empty
    observe = best_us(lambda: STAGE["ack"].observe(0.0003)) - empty
    before = best_us(counters_before) - empty
    print(f"stage timings: {frame:.2f} us per frame (one observe {observe:.2f} us); "
          f"{frame * 1000 / 1e6 * 100:.1f}% of a core at 1000 frames/s; the metrics the path had before: "
          f"{before:.2f} us per frame")


if __name__ == "__main__":
    main()
