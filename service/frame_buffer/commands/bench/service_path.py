"""The bench's service-path case: a synthetic source -> ``Producer`` -> Redis -> ``Worker``s in worker processes,
the layout ``FRAME_BUFFER_WORKER_PROCESSES`` gives the service, paced at the bench's rate.

Two :class:`~frame_buffer.service.Service` objects run in the bench process: one in role ``workers`` with worker
processes (its children are ``frame-buffer run --role workers``, as the service starts them), then, once every
child is ready, one in role ``ingest`` (source thread, producer, publisher thread). That is the parent of a
``role=all`` service with worker processes, thread for thread, except that the first frame waits for the
children: a child takes seconds to start, and a backlog of thousands of frames piling up meanwhile would be
measured as latency that a running service does not have.

Everything comes from the merged metrics (``Service.metric_families``: this process's registry plus the
children's counters and histograms, exact after the stop). Latency is ``frame_queue_end_to_end_latency_seconds``
(the frame's capture time -> its worker's handler starts), as quantiles of the histogram's buckets between a
snapshot taken after the first tenth of the run (warm-up, as the backend case drops its first tenth) and the
stop. Each run is audited: every frame published was acked, none dropped, none left in the stream.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import redis

from frame_buffer.commands import stages
from frame_buffer.commands.bench.harness import GROUP, WARMUP_FRACTION
from frame_buffer.config import Settings
from frame_buffer.service import Service

#: 184 x 184 RGB: 101,568 bytes, the synthetic source's nearest to the backend case's 100 KB (102,400 bytes).
FRAME_SIZE = "184x184"
#: How long the children may take to start, and the workers to drain the stream after the producer's flush.
START_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 30.0
#: How often those two waits look again.
POLL_S = 0.02


@dataclass
class ServiceRun:
    """One paced run of the service path, with the backend-only and raw redis-py runs alternated with it."""

    p50_ms: float
    p99_ms: float
    frames: int  # observations of the end-to-end histogram after the warm-up
    published: int
    acked: int
    dropped: int
    left: int  # lag + pending in the stream when the workers were stopped
    clean_stop: bool
    backend_p50_ms: float = 0.0
    backend_p99_ms: float = 0.0
    raw_p50_ms: float = 0.0
    raw_p99_ms: float = 0.0
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.published - self.acked

    @property
    def audited(self) -> bool:
        """Every frame published was acked, nothing dropped or left behind, both stops clean."""
        return self.lost == 0 and self.dropped == 0 and self.left == 0 and self.clean_stop and self.published > 0


def settings_for(redis_url: str, stream: str, rate: float, worker_processes: int, workers: int) -> Settings:
    """The service's settings for one run: its own stream, loopback HTTP, quiet children."""
    return Settings(backend="redis", redis_url=redis_url, stream=stream, group=GROUP, consumer_prefix="bench",
                    sources=(f"synthetic:bench:fps={rate:g}:size={FRAME_SIZE}",), worker_processes=worker_processes,
                    workers=workers, http_host="127.0.0.1", http_port=0, log_level="WARNING")


def service_latency(settings: Settings, seconds: float) -> ServiceRun:
    """Run the service path for ``seconds`` and return its latency, stage breakdown and audit."""
    workers = Service(settings.replace(role="workers", sources=()))
    ingest: Service | None = None
    client = redis.Redis.from_url(settings.redis_url)
    queue = settings.open_queue()

    def left() -> int:
        """Entries of the stream the group has not acked yet (lag + pending), as the queue counts them."""
        stats = queue.stats(GROUP)
        return stats.lag + stats.pending

    clean = False
    try:
        workers.start()
        _wait(lambda: workers.ready()["ready"], START_TIMEOUT_S,
              lambda: f"worker processes not ready: {workers.ready()['reasons']}")
        ingest = Service(settings.replace(role="ingest", worker_processes=0))
        before = workers.metric_families(refresh=True)  # this process's registry is the ingest's too
        ingest.start()
        started = time.monotonic()
        time.sleep(seconds / WARMUP_FRACTION)
        warm = workers.metric_families(refresh=True)
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        clean = ingest.stop() == 0
        ingest = None
        _wait(lambda: left() == 0, DRAIN_TIMEOUT_S,
              lambda: f"the workers did not drain the stream: {left()} entries left")
    finally:
        if ingest is not None:
            ingest.stop()
        remaining = left()
        clean = workers.stop() == 0 and clean
        queue.close()
        client.delete(settings.stream, settings.queue_settings().dead_letter_stream)
        client.close()
    after = workers.metric_families()
    latency = (stages.histogram_buckets(warm, "frame_queue_end_to_end_latency_seconds"),
               stages.histogram_buckets(after, "frame_queue_end_to_end_latency_seconds"))

    def grew(counter: str) -> float:
        return stages.counter_total(after, counter) - stages.counter_total(before, counter)

    return ServiceRun(
        p50_ms=round(stages.quantile_ms(*latency, 0.5), 3), p99_ms=round(stages.quantile_ms(*latency, 0.99), 3),
        frames=int(stages.observations(latency[1]) - stages.observations(latency[0])),
        published=int(grew("frame_queue_published")),
        acked=int(grew("frame_queue_acked")),
        dropped=int(grew("frame_queue_dropped")),
        left=remaining, clean_stop=clean, stages=stages.breakdown(stages.snapshot(warm), stages.snapshot(after)))


def _wait(condition: Any, timeout_s: float, why: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"service path: {why()}")
        time.sleep(POLL_S)


# -- the summary ------------------------------------------------------------------------------------------
def summary(runs: list[ServiceRun], layout: dict[str, Any]) -> dict[str, Any]:
    """Best and median p99 of the audited runs for each case, per-run figures, the best run's breakdown."""
    good = [run for run in runs if run.audited]
    best = min(good, key=lambda run: run.p99_ms, default=None)
    cases: dict[str, dict[str, float | None]] = {}
    for case, p50, p99 in (("service path", "p50_ms", "p99_ms"), ("backend only", "backend_p50_ms",
                                                                    "backend_p99_ms"),
                           ("raw redis-py", "raw_p50_ms", "raw_p99_ms")):
        # The backend and raw runs of a service run that failed its audit count all the same.
        values = [(getattr(run, p50), getattr(run, p99)) for run in (good if case == "service path" else runs)]
        lowest = min(values, key=lambda value: value[1], default=None)
        cases[case] = {"best_p50_ms": lowest[0] if lowest else None, "best_p99_ms": lowest[1] if lowest else None,
                       "median_p99_ms": round(statistics.median(v[1] for v in values), 3) if values else None}
    ratios = [run.p99_ms / run.backend_p99_ms for run in good if run.backend_p99_ms > 0]
    return {"layout": layout, "cases": cases,
            "median_ratio_to_backend": round(statistics.median(ratios), 2) if ratios else None,
            "runs": [{**asdict(run), "stages": None, "lost": run.lost, "audited": run.audited} for run in runs],
            "failed_audits": len(runs) - len(good), "stages": best.stages if best else []}


def print_summary(data: dict[str, Any], out: TextIO) -> None:
    """The service-path table: per run, then best and median per case, then the best run's breakdown."""
    layout = data["layout"]
    print(f"\nservice path: synthetic {layout['frame']} RGB ({layout['frame_bytes']} bytes) -> Producer -> Redis -> "
          f"{layout['worker_processes']} worker process(es) x {layout['workers']} worker thread(s), "
          f"paced at {layout['rate']:g}/s for {layout['seconds']:g}s, the first tenth not counted; "
          f"alternated with the backend-only and raw redis-py latency runs (ms)", file=out)
    header = (f"{'run':>3} {'svc p50':>8} {'svc p99':>8} {'back p50':>8} {'back p99':>8} {'raw p50':>8} "
              f"{'raw p99':>8} {'ratio':>6} {'published':>9} {'acked':>9} {'audit':>7}")
    print(header, file=out)
    print("-" * len(header), file=out)
    for index, run in enumerate(data["runs"], 1):
        ratio = f"{run['p99_ms'] / run['backend_p99_ms']:.2f}" if run["backend_p99_ms"] else "-"
        audit = "ok" if run["audited"] else "FAILED"
        print(f"{index:>3} {run['p50_ms']:>8} {run['p99_ms']:>8} {run['backend_p50_ms']:>8} "
              f"{run['backend_p99_ms']:>8} {run['raw_p50_ms']:>8} {run['raw_p99_ms']:>8} {ratio:>6} "
              f"{run['published']:>9} {run['acked']:>9} {audit:>7}", file=out)
        if not run["audited"]:
            print(f"    not counted: lost {run['lost']}, dropped {run['dropped']}, left in the stream {run['left']}, "
                  f"clean stop {run['clean_stop']}", file=out)
    print(f"{'case':<14} {'best p50':>8} {'best p99':>8} {'median p99':>10}", file=out)
    for case, values in data["cases"].items():
        cells = ["-" if values[key] is None else str(values[key]) for key in ("best_p50_ms", "best_p99_ms",
                                                                                "median_p99_ms")]
        print(f"{case:<14} {cells[0]:>8} {cells[1]:>8} {cells[2]:>10}", file=out)
    ratio = data["median_ratio_to_backend"]
    print(f"service p99 / backend-only p99 of the same repeat, median: {'-' if ratio is None else ratio}; "
          "service quantiles are interpolated in the histogram's buckets "
          "(metrics.LATENCY_BUCKETS: 0.5, 1, 2, 3, 5, 7.5, 10 ms ...)", file=out)
    if data["stages"]:
        print("best service run, by stage:", file=out)
        stages.print_breakdown(data["stages"], out)
