"""What ``frame-buffer bench`` prints after its runs: the rows, the servers' CPU, publish latency by replica
acknowledgements, the failover drills."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from frame_buffer.commands.bench.cluster import CpuShare
from frame_buffer.commands.bench.failover import DRILL_TIMEOUT_S


@dataclass
class Row:
    """One line of the result table."""

    size: str
    backend: str
    frames_per_s: float
    mb_per_s: float
    baseline_frames_per_s: float
    ratio: float
    p50_ms: float
    p99_ms: float
    baseline_p50_ms: float
    baseline_p99_ms: float
    # Redis: the target's masters and shard streams, and its servers' CPU in the best throughput run of ours
    masters: int | None = None
    shards: int | None = None
    cpu: CpuShare | None = None
    publish_p50_ms: float | None = None  # how long one publish() took in the latency run (WAIT included)
    publish_p99_ms: float | None = None

    @property
    def per_master_core(self) -> float | None:
        """Frames per second that one master at 100 % of a core would take: the measured rate divided by the
        masters' summed CPU share (the ceiling to project N hosts from)."""
        if self.cpu is None or self.cpu.masters <= 0:
            return None
        return round(self.frames_per_s / self.cpu.masters, 1)


def print_rows(rows: list[Row]) -> None:
    width = max([9, *(len(row.backend) for row in rows)])
    header = (f"{'size':<12} {'backend':<{width}} {'frames/s':>9} {'MB/s':>8} {'baseline':>9} {'ratio':>6} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'base p50':>8} {'base p99':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        latency = (f"{row.p50_ms:>7} {row.p99_ms:>7} {row.baseline_p50_ms:>8} {row.baseline_p99_ms:>8}"
                   if row.p99_ms else f"{'-':>7} {'-':>7} {'-':>8} {'-':>8}")
        print(f"{row.size:<12} {row.backend:<{width}} {row.frames_per_s:>9} {row.mb_per_s:>8} "
              f"{row.baseline_frames_per_s:>9} {row.ratio:>6} {latency}")


def print_servers(rows: list[Row]) -> None:
    print("\nredis servers in the best throughput run of ours (CPU as a share of one core; baseline: redis-py, "
          "RedisCluster on one stream for a cluster)")
    header = (f"{'size':<12} {'target':<11} {'masters':>7} {'shards':>6} {'frames/s':>9} {'masters':>8} "
              f"{'busiest':>8} {'replicas':>8} {'frames/s per master-core':>25}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.cpu is None:
            continue
        print(f"{row.size:<12} {row.backend:<11} {row.masters:>7} {row.shards:>6} {row.frames_per_s:>9} "
              f"{row.cpu.masters:>8} {row.cpu.busiest_master:>8} {row.cpu.replicas:>8} "
              f"{row.per_master_core or '-':>25}")


def print_acks(by_acks: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if not by_acks:
        return
    print(f"\npublish latency by replica acks: 100KB, one frame per publish, paced at {args.rate:.0f}/s for "
          f"{args.latency_seconds}s (ms; publish: the producer's publish() call, WAIT included; e2e: publish -> "
          "consumer; the run with the lowest publish p99)")
    header = (f"{'target':<11} {'acks':>4} {'pub p50':>8} {'pub p99':>8} {'median pub p99':>15} {'e2e p50':>8} "
              f"{'e2e p99':>8} {'runs':>4}")
    print(header)
    print("-" * len(header))
    for row in by_acks:
        print(f"{row['target']:<11} {row['replica_acks']:>4} {row['publish_p50_ms']:>8} {row['publish_p99_ms']:>8} "
              f"{row['median_publish_p99_ms']:>15} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['runs']:>4}")


def print_failover(failover: dict[str, Any]) -> None:
    print(f"\nfailover drills on {failover['target']} ({failover['shards']} shards): SIGKILL of the master of one "
          "shard -> first publish accepted (publish_encoded retried every 10 ms, no breaker); the killed node "
          "restarted and the cluster whole before the next drill")
    header = f"{'drill':>5} {'killed':<16} {'promoted':<16} {'seconds':>8} {'refused':>8}  errors"
    print(header)
    print("-" * len(header))
    for index, drill in enumerate(failover["drills"], 1):
        seconds = "FAILED" if drill["seconds"] is None else drill["seconds"]
        print(f"{index:>5} {drill['killed']:<16} {drill['promoted']:<16} {seconds:>8} {drill['failed_attempts']:>8}"
              f"  {'; '.join(drill['errors'])}")
    print(f"p50 {failover['p50_s']} s, max {failover['max_s']} s over {len(failover['drills']) - failover['failed']} "
          f"drill(s); {failover['failed']} without an accepted publish within {DRILL_TIMEOUT_S:.0f} s")
