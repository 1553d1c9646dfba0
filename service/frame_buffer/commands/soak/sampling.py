"""What ``soak`` samples every interval, across every process of the service.

Counts and latencies come from ``Service.metric_families(refresh=True)``: this process's registry plus what its
worker processes' ``/metrics`` say now, so frames acked in a child count. RSS is read from ``/proc/<pid>/status``
for the parent and for each worker process by the pid ``service.processes.states()`` gives now: a child that
was restarted is read under its new pid (and the row says which pid it was). Redis ``used_memory`` is the
whole instance's (``INFO memory``): on a Redis shared with other work it moves with that work too.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from prometheus_client.metrics_core import Metric

from frame_buffer.commands import stages
from frame_buffer.queue import BackendUnavailable, FrameQueue, QueueError
from frame_buffer.queue.redis_streams import RedisQueue
from frame_buffer.service import Service

E2E_FAMILY = "frame_queue_end_to_end_latency_seconds"
MB = 1024 * 1024


def rss_mb(pid: int | None = None) -> float | None:
    """Resident set size of ``pid`` (default: this process) from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid if pid is not None else 'self'}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the process ended (a worker process between two incarnations)
        return None
    return None


def redis_used_mb(queue: FrameQueue) -> float | None:
    """Redis ``used_memory`` in MB (every master's in a cluster); None without Redis or when it does not answer
    (the row shows a gap)."""
    if not isinstance(queue, RedisQueue):
        return None
    try:
        return round(queue.used_memory_bytes() / MB, 1)
    except (QueueError, KeyError, ValueError):
        return None


class Sampler:
    """One row per call: the deltas since the previous row, and the state of every process now."""

    def __init__(self, service: Service, queue: FrameQueue, group: str, baseline: list[Metric]) -> None:
        self.service, self.queue, self.group = service, queue, group
        self.start = self.last_time = time.monotonic()
        self.last_buckets = stages.histogram_buckets(baseline, E2E_FAMILY)
        self.published0 = stages.counter_total(baseline, "frame_queue_published")
        self.acked0 = self.last_acked = stages.counter_total(baseline, "frame_queue_acked")
        self.pids: dict[str, int | None] = {}
        self.names = ["parent"] + [state["process"] for state in self._states()]

    def _states(self) -> list[dict[str, Any]]:
        return self.service.processes.states() if self.service.processes is not None else []

    def sample(self) -> dict[str, Any]:
        families = self.service.metric_families(refresh=True)
        now = time.monotonic()
        buckets = stages.histogram_buckets(families, E2E_FAMILY)
        acked = stages.counter_total(families, "frame_queue_acked") - self.acked0
        frames = stages.observations(buckets) - stages.observations(self.last_buckets)
        pids: dict[str, int | None] = {"parent": os.getpid(), **{s["process"]: s["pid"] for s in self._states()}}
        for name, pid in pids.items():
            if name in self.pids and pid != self.pids[name]:
                print(f"soak: {name} has a new pid {pid} (was {self.pids[name]}): it was restarted",
                      file=sys.stderr, flush=True)
        self.pids = pids
        rss = {name: (round(mb, 1) if (mb := rss_mb(pid)) is not None else None) if pid else None
               for name, pid in pids.items()}
        producer = self.service.producer
        try:
            entries: int | None = self.queue.stats(self.group).depth
        except BackendUnavailable:
            entries = None
        row = {
            "t": round(now - self.start, 1),
            "published": int(stages.counter_total(families, "frame_queue_published") - self.published0),
            "acked": int(acked), "fps": round((acked - self.last_acked) / (now - self.last_time), 1),
            "frames": int(frames),
            "p50_ms": round(stages.quantile_ms(self.last_buckets, buckets, 0.5), 2),
            "p99_ms": round(stages.quantile_ms(self.last_buckets, buckets, 0.99), 2),
            "rss_mb": rss, "rss_total_mb": round(sum(mb for mb in rss.values() if mb is not None), 1),
            "pids": pids, "redis_used_mb": redis_used_mb(self.queue), "stream_entries": entries,
            "buffer_mb": round(producer.budget.used / MB, 1) if producer else 0.0,
            "buffer_peak_mb": round(producer.budget.peak / MB, 1) if producer else 0.0,
        }
        self.last_buckets, self.last_acked, self.last_time = buckets, acked, now
        return row

    def header(self) -> str:
        rss = " ".join(f"{_short(name):>8}" for name in self.names)
        return (f"{'t s':>7} {'published':>10} {'acked':>10} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>8} {rss} "
                f"{'RSS sum':>8} {'redis MB':>9} {'stream':>7} {'buf MB':>7} {'buf peak':>8}")

    def line(self, row: dict[str, Any]) -> str:
        rss = " ".join(f"{_cell(row['rss_mb'].get(name)):>8}" for name in self.names)
        return (f"{row['t']:>7} {row['published']:>10} {row['acked']:>10} {row['fps']:>9} {row['p50_ms']:>8} "
                f"{row['p99_ms']:>8} {rss} {row['rss_total_mb']:>8} {_cell(row['redis_used_mb']):>9} "
                f"{_cell(row['stream_entries']):>7} {row['buffer_mb']:>7} {row['buffer_peak_mb']:>8}")


def _short(name: str) -> str:
    """``RSS main`` / ``RSS wp0``: column titles of the RSS of each process."""
    return "RSS main" if name == "parent" else "RSS wp" + name.rsplit("-", 1)[-1]


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
