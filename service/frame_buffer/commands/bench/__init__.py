"""``frame-buffer bench``: this project's backends against raw-client baselines, in one run.

For each backend and frame size it measures end-to-end throughput (a producer thread publishing in batches,
a consumer acking; time from the first publish to the last ack) and latency at a paced rate (a producer
process publishing one frame at a time, a consumer in this process), and the same for the raw client doing
the equivalent work (redis-py: pipelined XADD, XREADGROUP + XACK; pika: persistent messages with the same
confirm window). It also times the codec on a Full HD frame.

For Redis at 100KB each latency repeat also runs the whole service path (``service_path.py``: a synthetic source
-> ``Producer`` -> Redis -> ``Worker``s in worker processes, at the same rate), the three cases in an order that
turns with each repeat, and prints its
table under the backend one: best and median p99 of each case, each run's audit, the best run's stage breakdown.

Every measurement is repeated ``--repeat`` times, alternating ours and the baseline so that a noisy minute
hits both, and the best run of each side counts: the shortest throughput run, the latency run with the
lowest p99.

``--cpu-wake-latency-us 0`` holds a PM QoS request for the whole run, so that idle CPUs poll instead of
halting (``wake_latency.py``); the last lines say which held, and the cpuidle governor.

**Redis Clusters.** ``--redis-mode cluster`` makes ``--redis-url`` a cluster's seed URLs (comma-separated, as
``FRAME_BUFFER_REDIS_URL`` in cluster mode), and each ``--cluster-url SEEDS`` adds a cluster measured beside the
server of ``--redis-url`` in the same run, alternated with it within each repeat (``cluster.py``). Each cluster
row runs the backend in cluster mode on ``--shards`` shard streams; its baseline is redis-py's ``RedisCluster``
on one stream. For clusters the bench also prints what the servers spent of their CPU during the throughput runs
(the per-master ceiling), publish latency by ``--replica-acks`` (``WAIT``), and with ``--failover-drills N`` the
time from a master's SIGKILL to the first accepted publish. ``scripts/local-cluster.sh`` starts such clusters.

This module is the command; ``harness.py`` measures this project's queue, ``redis_raw.py`` and ``pika_raw.py``
the raw clients, with the same harness; ``cluster.py`` the Redis targets, their CPU and the failover drills.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from frame_buffer.checks import redis_seeds_problem
from frame_buffer.codec import FrameCodec
from frame_buffer.commands.bench import cluster, failover, pika_raw, printing, redis_raw, service_path
from frame_buffer.commands.bench.cluster import CpuShare, RedisTarget
from frame_buffer.commands.bench.harness import (
    GROUP,
    Target,
    after_warmup,
    backend_latency,
    backend_throughput,
    codec_timings,
)
from frame_buffer.commands.bench.printing import Row
from frame_buffer.commands.common import choices_list, integer, number, url
from frame_buffer.config import ConfigError, amqp_url_problem, redis_url_problem
from frame_buffer.frame import Frame
from frame_buffer.queue import QueueSettings
from frame_buffer.queue.rabbitmq import delete_topology
from frame_buffer.queue.settings import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL
from frame_buffer.sources.synthetic import test_pattern
from frame_buffer.stats import percentiles_ms
from frame_buffer.wake_latency import NO_BOUND_US, WakeLatencyRequest, WakeLatencyUnavailable, idle_governor

SIZES: dict[str, tuple[int, ...] | int] = {
    "100KB": 100 * 1024, "640x480x3": (480, 640, 3), "1920x1080x3": (1080, 1920, 3),
}
#: Frames per throughput run, scaled so each run moves roughly the same number of bytes.
COUNTS = {"100KB": 3000, "640x480x3": 1000, "1920x1080x3": 150}


def _redis_url_or_seeds(text: str) -> str:
    """An argument type: one Redis URL, or comma-separated seed URLs of a cluster (checked against the mode
    once every argument is known)."""
    problem = redis_seeds_problem(text) if "," in text else redis_url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _seeds(text: str) -> str:
    """An argument type: seed URLs of a Redis Cluster."""
    if problem := redis_seeds_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def _acks_list(text: str) -> list[int]:
    """An argument type: comma-separated replica counts, 0 to 16, without repeats."""
    values = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated integers 0 to 16, got {item!r}") from None
        if not 0 <= value <= 16:
            raise argparse.ArgumentTypeError(f"must be 0 to 16 replicas, got {value}")
        values.append(value)
    return list(dict.fromkeys(values))


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("bench", help="measure backends against raw-client baselines")
    parser.add_argument("--backends", type=choices_list(("redis", "rabbitmq")), default="redis",
                        help="comma-separated: redis, rabbitmq")
    parser.add_argument("--sizes", type=choices_list(tuple(SIZES)), default=",".join(SIZES),
                        help=f"comma-separated of {', '.join(SIZES)}")
    parser.add_argument("--redis-url", type=_redis_url_or_seeds, default=DEFAULT_REDIS_URL,
                        help="Redis server, or with --redis-mode cluster a cluster's comma-separated seed URLs "
                             "(FRAME_BUFFER_* settings do not apply to bench)")
    parser.add_argument("--redis-mode", choices=("standalone", "cluster"), default="standalone",
                        help="what --redis-url is: one server, or a Redis Cluster")
    parser.add_argument("--cluster-url", type=_seeds, action="append", default=[], metavar="SEEDS",
                        help="a Redis Cluster (comma-separated seed URLs) measured beside --redis-url in the same "
                             "run, alternated with it; repeat for several (e.g. 1 and 3 masters)")
    parser.add_argument("--shards", type=integer(1, 1024), default=16,
                        help="shard streams of the backend on each cluster (a standalone server keeps its one stream)")
    parser.add_argument("--replica-acks", type=_acks_list, default=[0], metavar="N[,N...]",
                        help="latency runs on each cluster with each of these FRAME_BUFFER_REDIS_REPLICA_ACKS "
                             "(WAIT N after every publish), e.g. 0,1")
    parser.add_argument("--failover-drills", type=integer(0, 100), default=0, metavar="N",
                        help="after the measurements, SIGKILL a master N times on each cluster of 3 or more "
                             "masters and time the first accepted publish (nodes started by "
                             "scripts/local-cluster.sh)")
    parser.add_argument("--amqp-url", type=url(amqp_url_problem), default=DEFAULT_AMQP_URL,
                        help="RabbitMQ broker")
    parser.add_argument("--batch", type=integer(1, 10_000), default=16, help="frames per publish / consume call")
    parser.add_argument("--rate", type=number(0, 1e6, low_open=True), default=1000.0,
                        help="paced rate of the latency run (frames/s)")
    parser.add_argument("--latency-seconds", type=number(0, 3600, low_open=True), default=3.0,
                        help="length of each latency run")
    parser.add_argument("--repeat", type=integer(1, 100), default=3,
                        help="throughput and latency runs per case, alternated with the baseline; the best counts")
    parser.add_argument("--worker-processes", type=integer(1, 16), default=2,
                        help="worker processes of the service-path case (redis, 100KB; 2: one per core)")
    parser.add_argument("--workers", type=integer(1, 64), default=1,
                        help="consumer threads in each of those worker processes")
    parser.add_argument("--scale", type=number(0, 100, low_open=True), default=1.0,
                        help="multiply the frame counts (quick runs: 0.1)")
    parser.add_argument("--cpu-wake-latency-us", type=integer(0, NO_BOUND_US),
                        help="hold this bound on idle CPUs' wake-up latency during the run (0: they poll; root)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    parser.set_defaults(func=run)


def _payload(size: str) -> Frame:
    spec = SIZES[size]
    if isinstance(spec, int):
        rng = np.random.default_rng(7)  # incompressible, like a JPEG
        return Frame("bench", 0, rng.integers(0, 256, spec, dtype=np.uint8).tobytes())
    return Frame("bench", 0, test_pattern(spec, 1))


# -- the run ------------------------------------------------------------------------------------------------
@dataclass
class _Case:
    """One Redis target at one size: its stream, and the best runs of ours and of the baseline so far."""

    target: RedisTarget
    stream: str
    ours_s: float = float("inf")
    base_s: float = float("inf")
    cpu: CpuShare | None = None
    latency: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # replica acks -> runs
    base_latency: list[dict[str, float]] = field(default_factory=list)

    def harness(self, acks: int = 0) -> Target:
        settings = QueueSettings(stream=self.stream, groups=(GROUP,), max_lag=100_000)
        return Target("redis", self.target.url, DEFAULT_AMQP_URL, settings, self.target.options(acks))


def _turned(items: list[Any], attempt: int) -> list[Any]:
    """``items`` started at ``attempt`` (mod their number): the order turns with each repeat, so no case is
    always first (in pairs of service-path runs the first was the better in 6 of 7)."""
    turn = attempt % len(items) if items else 0
    return items[turn:] + items[:turn]


def _latency_run(target: Target, frame: Frame, args: argparse.Namespace) -> dict[str, float]:
    """One paced latency run of ours: end-to-end p50/p99/p99.9 and the publish calls' p50/p99."""
    end_to_end, publish_ms = backend_latency(target, frame, args.rate, args.latency_seconds)
    result = percentiles_ms(after_warmup(end_to_end))
    took = percentiles_ms(after_warmup(publish_ms))
    return {**result, "publish_p50": took["p50"], "publish_p99": took["p99"]}


def _measure_redis(size: str, targets: list[RedisTarget], args: argparse.Namespace
                   ) -> tuple[list[Row], list[service_path.ServiceRun], list[dict[str, Any]]]:
    """Every Redis target at one size, alternated within each repeat: rows, the service-path runs (standalone,
    100KB), and the latency by replica acks of every target."""
    frame = _payload(size)
    count = max(10, int(COUNTS[size] * args.scale))
    payload = FrameCodec().encode(frame).payload
    run_id = uuid.uuid4().hex[:8]
    cases = [_Case(target, f"bench_{run_id}_{index}") for index, target in enumerate(targets)]
    for attempt in range(args.repeat):
        for case in _turned(cases, attempt):
            target = case.harness()
            seconds, cpu = cluster.timed_with_cpu(
                case.target, lambda: backend_throughput(target, frame, count, args.batch))  # noqa: B023 (called here)
            if seconds < case.ours_s:
                case.ours_s, case.cpu = seconds, cpu
            case.target.delete(case.stream)  # acked entries stay in the stream until trimmed
            case.base_s = min(case.base_s, redis_raw.throughput(case.target.url, f"{case.stream}_raw{attempt}", payload,
                                                                count, args.batch, cluster=case.target.cluster))
    service_runs: list[service_path.ServiceRun] = []
    standalone = next((case for case in cases if not case.target.cluster), None)
    runs: list[tuple[str, _Case, int]] = [("service", standalone, 0)] if standalone else []
    for case in cases:
        runs += [("ours", case, acks) for acks in (args.replica_acks if case.target.cluster else [0])]
    runs += [("base", case, 0) for case in cases]
    for attempt in range(args.repeat if size == "100KB" else 0):
        for kind, case, acks in _turned(runs, attempt):
            if kind == "service":
                service_runs.append(service_path.service_latency(service_path.settings_for(
                    case.target.url, f"{case.stream}_svc{attempt}", args.rate, args.worker_processes, args.workers),
                    args.latency_seconds))
            elif kind == "ours":
                case.latency.setdefault(acks, []).append(_latency_run(case.harness(acks), frame, args))
                case.target.delete(case.stream)
            else:
                case.base_latency.append(percentiles_ms(after_warmup(redis_raw.latency(
                    case.target.url, f"{case.stream}_rawlat{attempt}", payload, args.rate, args.latency_seconds,
                    cluster=case.target.cluster))))
        if service_runs and standalone is not None:
            run = service_runs[-1]
            run.backend_p50_ms, run.backend_p99_ms = standalone.latency[0][-1]["p50"], standalone.latency[0][-1]["p99"]
            run.raw_p50_ms, run.raw_p99_ms = standalone.base_latency[-1]["p50"], standalone.base_latency[-1]["p99"]
    none = percentiles_ms([])  # sizes without latency runs
    rows, by_acks = [], []
    for case in cases:
        case.target.delete(case.stream)
        mine = min(case.latency.get(0, []), key=lambda run: run["p99"], default={**none, "publish_p50": 0.0,
                                                                                 "publish_p99": 0.0})
        theirs = min(case.base_latency, key=lambda run: run["p99"], default=none)
        rows.append(Row(size, case.target.label, round(count / case.ours_s, 1),
                        round(count * frame.nbytes / case.ours_s / 1e6, 1), round(count / case.base_s, 1),
                        round(case.base_s / case.ours_s, 2), mine["p50"], mine["p99"], theirs["p50"], theirs["p99"],
                        case.target.masters, case.target.shards, case.cpu, mine["publish_p50"] or None,
                        mine["publish_p99"] or None))
        for acks, acks_runs in sorted(case.latency.items()):
            best = min(acks_runs, key=lambda run: run["publish_p99"])
            by_acks.append({"target": case.target.label, "replica_acks": acks, "runs": len(acks_runs),
                            "publish_p50_ms": best["publish_p50"], "publish_p99_ms": best["publish_p99"],
                            "median_publish_p99_ms": round(statistics.median(r["publish_p99"] for r in acks_runs), 3),
                            "p50_ms": best["p50"], "p99_ms": best["p99"]})
    return rows, service_runs, by_acks


def _measure_rabbitmq(size: str, args: argparse.Namespace) -> Row:
    """RabbitMQ at one size: ours and raw pika alternated."""
    frame = _payload(size)
    count = max(10, int(COUNTS[size] * args.scale))
    stream = f"bench_{uuid.uuid4().hex[:8]}"
    target = Target("rabbitmq", args.redis_url, args.amqp_url, QueueSettings(stream=stream, groups=(GROUP,),
                                                                               max_lag=100_000))
    payload = FrameCodec().encode(frame).payload
    ours = base = float("inf")
    # Alternate ours and the baseline and keep the best of each: the machine's noise hits both alike.
    for _attempt in range(args.repeat):
        ours = min(ours, backend_throughput(target, frame, count, args.batch))
        base = min(base, pika_raw.throughput(args.amqp_url, bytes(payload), count))
    ours_runs: list[dict[str, float]] = []
    base_runs: list[dict[str, float]] = []
    for attempt in range(args.repeat if size == "100KB" else 0):
        # Each side keeps its run with the lowest p99. Scheduling noise on a shared machine only ever adds
        # latency, so the quietest run is the closest to the code's own.
        for case in _turned(["ours", "base"], attempt):
            if case == "ours":
                ours_runs.append(percentiles_ms(after_warmup(
                    backend_latency(target, frame, args.rate, args.latency_seconds)[0])))
            else:
                base_runs.append(percentiles_ms(after_warmup(
                    pika_raw.latency(args.amqp_url, bytes(payload), args.rate, args.latency_seconds))))
    none = percentiles_ms([])
    mine = min(ours_runs, key=lambda run: run["p99"], default=none)
    theirs = min(base_runs, key=lambda run: run["p99"], default=none)
    delete_topology(args.amqp_url, QueueSettings(stream=stream), (GROUP,))
    return Row(size, "rabbitmq", round(count / ours, 1), round(count * frame.nbytes / ours / 1e6, 1),
               round(count / base, 1), round(base / ours, 2), mine["p50"], mine["p99"], theirs["p50"], theirs["p99"])


def _targets(args: argparse.Namespace) -> list[RedisTarget]:
    """The Redis targets the arguments name, each asked what it is (so a wrong mode or an unreachable server
    stops the bench before any measurement: exit 2 or 3, one line)."""
    if "redis" not in args.backends:
        if args.cluster_url or args.redis_mode == "cluster" or args.failover_drills:
            raise ConfigError("--cluster-url, --redis-mode cluster and --failover-drills need --backends redis")
        return []
    if args.redis_mode == "cluster" and (problem := redis_seeds_problem(args.redis_url)):
        raise ConfigError(f"--redis-url: {problem}")
    if args.redis_mode == "standalone" and "," in args.redis_url:
        raise ConfigError("--redis-url: several URLs (seed nodes) need --redis-mode cluster")
    targets = [cluster.connect(args.redis_url, args.redis_mode == "cluster", args.shards, "--redis-url")]
    targets += [cluster.connect(seeds, True, args.shards, "--cluster-url") for seeds in args.cluster_url]
    clusters = [target for target in targets if target.cluster]
    if any(args.replica_acks) and not clusters:
        raise ConfigError("--replica-acks: WAIT needs replicas: give a cluster (--redis-mode cluster or --cluster-url)")
    if args.failover_drills:
        able = [target for target in clusters if target.masters >= 3]
        if not able:
            raise ConfigError(f"--failover-drills: {failover.drill_problem((clusters or targets)[0])}")
        for target in able:
            if problem := failover.drill_problem(target):
                raise ConfigError(f"--failover-drills: {problem}")
    return targets


def run(args: argparse.Namespace) -> int:
    wake_latency = None
    if args.cpu_wake_latency_us is not None:
        try:
            wake_latency = WakeLatencyRequest(args.cpu_wake_latency_us)
        except (WakeLatencyUnavailable, ValueError) as exc:
            raise ConfigError(f"--cpu-wake-latency-us: {exc}") from exc
    rows: list[Row] = []
    service_runs: list[service_path.ServiceRun] = []
    by_acks: list[dict[str, Any]] = []
    failovers: list[dict[str, Any]] = []
    try:  # the spawned producers run while this process holds the request: it bounds every CPU alike
        targets = _targets(args)
        for backend in args.backends:
            for size in args.sizes:
                if backend == "rabbitmq":
                    rows.append(_measure_rabbitmq(size, args))
                    continue
                size_rows, size_runs, size_acks = _measure_redis(size, targets, args)
                rows += size_rows
                service_runs += size_runs
                by_acks += size_acks
        for target in targets if args.failover_drills else []:
            if target.cluster and target.masters >= 3:
                failovers.append(failover.drill_summary(target, failover.failover_drills(target, args.failover_drills)))
        codec = codec_timings()
    finally:
        if wake_latency is not None:
            wake_latency.close()
    service = service_path.summary(service_runs, {
        "frame": service_path.FRAME_SIZE, "frame_bytes": 184 * 184 * 3, "rate": args.rate,
        "seconds": args.latency_seconds, "worker_processes": args.worker_processes, "workers": args.workers,
    }) if service_runs else None
    printing.print_rows(rows)
    print(f"latency runs: 100KB frames paced at {args.rate:.0f}/s for {args.latency_seconds}s, the first tenth "
          f"not counted; "
          f"Full HD encode+decode: {codec['fullhd_encode_decode_us_none']} us (no checksum), "
          f"{codec['fullhd_encode_decode_us_xxh3']} us (xxh3)")
    if any(row.masters is not None for row in rows) and (args.cluster_url or args.redis_mode == "cluster"):
        printing.print_servers(rows)
        printing.print_acks(by_acks, args)
    for summary in failovers:
        printing.print_failover(summary)
    if service is not None:
        service_path.print_summary(service, sys.stdout)
    held = "none held" if wake_latency is None else f"{wake_latency.microseconds} us held"
    governor = idle_governor()
    print(f"CPU wake-up latency bound: {held}; cpuidle governor: {governor}")
    if args.json:
        print(json.dumps({"rows": [{**asdict(row), "per_master_core": row.per_master_core} for row in rows],
                          "codec": codec, "service_path": service, "replica_acks": by_acks, "failover": failovers,
                          "cpu_wake_latency_us": args.cpu_wake_latency_us, "idle_governor": governor}))
    failed = [f"{failover['failed']} failover drill(s) on {failover['target']} without an accepted publish"
              for failover in failovers if failover["failed"]]
    if service is not None and service["failed_audits"]:
        failed.append(f"{service['failed_audits']} service-path run(s) lost or left frames behind (see the table)")
    if failed:
        print(f"frame-buffer bench: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# -- the tables -------------------------------------------------------------------------------------------
