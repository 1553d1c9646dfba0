"""The service runtime that ``frame-buffer run`` (``commands/run.py``) starts: the process deployed on nebula.

Sources -> Producer (adaptive buffer, breaker, spool) -> queue -> N Workers -> handler, with ``/metrics``,
``/healthz`` and ``/readyz`` over HTTP (``http_endpoint.py``). ``role`` picks the part this process runs
(``ingest``: sources and producer; ``workers``: consumers; ``all``: both), and with ``worker_processes`` the
workers run in child processes (``worker_processes.py``) whose health, readiness and counters this process
reports as its own.

Start: every setting, source spec and the handler are checked (``start_checks.py``), files and streams are
opened once, the backend is asked once (refused credentials stop the start; an unreachable backend does not:
the service starts degraded and spools), and the HTTP port is bound, all before any thread starts. Every
thread then runs under a :class:`~frame_buffer.supervisor.Supervisor`. :meth:`Service.stop` drains in order:
stop the sources, flush buffer and spool, let the workers finish and ack what they hold; 0 when clean, 1 if
the drain timed out and frames were left unpublished, which are then counted as dropped with reason
``shutdown_timeout``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import generate_latest

from frame_buffer import metrics, metrics_merge
from frame_buffer.config import Settings
from frame_buffer.errors import ConfigError
from frame_buffer.flow.backpressure import ProducerClosed
from frame_buffer.flow.producer import Producer
from frame_buffer.flow.retry import RetryPolicy
from frame_buffer.flow.worker import Worker
from frame_buffer.handlers import load_handler
from frame_buffer.http_endpoint import HTTPServer, handler_for
from frame_buffer.queue import BackendRefused, BackendUnavailable, BackpressureTimeout, FrameQueue, QueueStats
from frame_buffer.sources import SourceSpec, open_source, probe_source
from frame_buffer.sources.synthetic import SyntheticSource
from frame_buffer.sources.video import READ_TIMEOUT_S, VideoSource
from frame_buffer.start_checks import check_layout, check_sources, stall_limit
from frame_buffer.supervisor import Heartbeat, Supervisor
from frame_buffer.worker_processes import WorkerProcesses

log = logging.getLogger("frame_buffer.service")
STATS_INTERVAL_S = 2.0
#: How long the drain waits for a source thread: one blocked read ends within READ_TIMEOUT_S.
SOURCE_JOIN_S = READ_TIMEOUT_S + 1.0
#: The least time a worker gets to finish its round at the drain, after the producer's flush.
WORKER_GRACE_S = 1.0


def backend_address(settings: Settings) -> str:
    """``host:port`` (or socket path) of the configured backend, for reasons on /readyz."""
    return settings.backend_address


class Service:
    """Everything ``run`` starts, and the order in which it is stopped.

    The constructor checks and opens everything that can be wrong (sources, handler, backend credentials,
    the HTTP address) and raises a :class:`~frame_buffer.errors.FrameBufferError` naming it; no thread runs yet.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        check_layout(settings)
        self.specs = [SourceSpec.parse(text) for text in settings.sources] if settings.role != "workers" else []
        check_sources(settings, self.specs)
        #: Consumer threads in this process (none in the ingest role, or when worker processes run them).
        self.worker_count = 0 if settings.role == "ingest" or settings.worker_processes else settings.workers
        self.handler = load_handler(settings.handler)
        self.supervisor = Supervisor(stall_limit_s=stall_limit(settings))
        self.processes = (WorkerProcesses(settings, self.supervisor)
                          if settings.worker_processes and settings.role != "ingest" else None)
        self.stopping = threading.Event()
        self.sources_stop = threading.Event()
        self.workers_stop = threading.Event()
        self.producer: Producer | None = None
        self.workers: list[Worker] = []
        self.sources: dict[str, SyntheticSource | VideoSource] = {}
        self.source_threads: list[threading.Thread] = []
        self.worker_threads: list[threading.Thread] = []
        self.started = False
        self.address = backend_address(settings)
        #: Why a source cannot deliver, from the probe at start until its thread knows better.
        self.source_problems: dict[str, str | None] = {}
        for spec in self.specs:
            problem = probe_source(spec)
            if problem:
                log.warning("source %s: %s; starting without it, reconnecting with backoff", spec.name, problem)
            self.source_problems[spec.camera] = problem
        self.shared: FrameQueue | None = settings.open_queue() if settings.backend == "memory" else None
        self.backend_error = self._check_backend()
        self.backend_reachable = self.backend_error is None
        self.http = self._bind()

    def _check_backend(self) -> str | None:
        """Ask the backend once: refused credentials raise (exit 2); unreachable is a reason, not an error."""
        queue: FrameQueue | None = None
        try:
            queue = self.open_queue()
            queue.ensure_group(self.settings.group)
        except BackendRefused:
            raise
        except BackendUnavailable as exc:
            log.warning("backend unreachable at start; starting degraded, frames are spooled until it answers: %s",
                        exc)
            return self._backend_reason(exc)
        finally:
            if queue is not None and queue is not self.shared:
                queue.close()
        return None

    def _backend_reason(self, exc: BackendUnavailable) -> str:
        if isinstance(exc, BackendRefused):
            return f"authentication refused by {self.address}: {exc}"
        return f"backend unreachable at {self.address}: {exc}"

    def _bind(self) -> HTTPServer:
        host, port = self.settings.http_host, self.settings.http_port
        try:
            return HTTPServer((host, port), handler_for(self, self.exposition))
        except socket.gaierror as exc:
            raise ConfigError(f"FRAME_BUFFER_HTTP_HOST: cannot listen on {host}:{port}: {exc.strerror}") from None
        except OSError as exc:
            name = "FRAME_BUFFER_HTTP_HOST" if exc.errno == 99 else "FRAME_BUFFER_HTTP_PORT"  # 99: EADDRNOTAVAIL
            raise ConfigError(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def open_queue(self) -> FrameQueue:
        """A queue of the worker's or publisher's own (the memory backend is shared)."""
        return self.shared if self.shared is not None else self.settings.open_queue()

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    # -- health -------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness: every supervised thread alive and making progress (see supervisor.py)."""
        problems = self.supervisor.problems()
        if self.processes is not None:
            problems += self.processes.problems()
        state = {"alive": not problems, "status": "alive" if not problems else "unhealthy", "problems": problems,
                 "threads": self.supervisor.threads()}
        if self.processes is not None:
            state["processes"] = self.processes.states()
        return state

    def exposition(self) -> bytes:
        """``/metrics``: this process's registry, plus the worker processes' counters and histograms."""
        if self.processes is None:
            return generate_latest(metrics.REGISTRY)
        return metrics_merge.exposition(self.metric_families())

    def metric_families(self, refresh: bool = False) -> metrics_merge.Families:
        """This process's metrics with its worker processes' added in (their final counts once stopped);
        ``refresh`` reads the children now instead of using their last read."""
        own = metrics_merge.own(metrics.REGISTRY)
        if self.processes is None:
            return own
        if refresh:
            self.processes.refresh()
        return metrics_merge.add(own, *self.processes.families())

    def source_problem(self, camera: str) -> str | None:
        source = self.sources.get(camera)
        if isinstance(source, VideoSource):
            return source.problem
        return self.source_problems.get(camera) if source is None else None

    def ready(self) -> dict[str, Any]:
        """Readiness: backend reachable, breaker closed, every source delivering, not stopping; else why not."""
        breaker = self.producer.breaker.state if self.producer else "closed"
        spooled = len(self.producer.spool) if self.producer else 0
        reasons: list[str] = []
        if self.stopping.is_set():
            reasons.append("stopping")
        if not self.backend_reachable:
            reasons.append(self.backend_error or f"backend unreachable at {self.address}")
        if breaker != "closed":
            reasons.append(f"publish breaker {breaker}")
        sources = {spec.camera: self.source_problem(spec.camera) or "ok" for spec in self.specs}
        reasons.extend(f"source {camera}: {why}" for camera, why in sources.items() if why != "ok")
        if self.processes is not None:
            reasons.extend(self.processes.reasons())
        ok = not reasons
        return {"ready": ok, "status": "ready" if ok else "degraded", "reasons": reasons,
                "backend": self.settings.backend, "backend_address": self.address,
                "backend_reachable": self.backend_reachable, "breaker": breaker, "spool_frames": spooled,
                "sources": sources, "stopping": self.stopping.is_set(), "role": self.settings.role}

    # -- start --------------------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        spawn = self.supervisor.spawn
        self.started = True
        metrics.initialise([spec.camera for spec in self.specs], [settings.group],
                           settings.shard_count if settings.backend == "redis" else 1)
        spawn("http", self._serve_http, self.stopping)
        spawn("stats", self._poll_stats, self.stopping)
        log.info("serving /metrics /healthz /readyz on %s:%d", settings.http_host, self.port)
        retry = RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                            max_attempts=settings.max_deliveries)
        for index in range(self.worker_count):
            worker = Worker(self.open_queue, settings.group, f"{settings.consumer_prefix}-{index}", self.handler,
                            retry=retry)
            self.workers.append(worker)
            self.worker_threads.append(spawn(
                f"worker-{index}", lambda beat, w=worker: w.run(self.workers_stop, beat.beat),  # type: ignore[misc]
                self.workers_stop))
        if self.processes is not None:
            self.processes.start()
        if self.specs:
            self.producer = Producer(self.open_queue, policy=settings.policy,
                                     budget_bytes=settings.buffer_budget_bytes,
                                     block_timeout_s=settings.publish_timeout_s, codec=settings.codec(), spawn=spawn)
            for spec in self.specs:
                self.source_threads.append(spawn(
                    f"source-{spec.camera}", lambda beat, s=spec: self._ingest(s, beat),  # type: ignore[misc]
                    self.sources_stop))
        log.info("started (role %s): backend %s, stream %s, group %s, %d worker threads, %d worker processes, "
                 "sources %s", settings.role, settings.backend, settings.stream, settings.group, self.worker_count,
                 len(self.processes.children) if self.processes else 0,
                 [spec.camera for spec in self.specs] or "none")

    def _serve_http(self, heartbeat: Heartbeat) -> None:
        self.http.heartbeat = heartbeat
        self.http.serve_forever(poll_interval=0.5)

    def _ingest(self, spec: SourceSpec, heartbeat: Heartbeat) -> None:
        """Feed one source into the producer until the sources are stopped (or the source ends).

        The source object outlives a restart of this loop, so its frame numbers go on where they were.
        """
        assert self.producer is not None
        source = self.sources.get(spec.camera)
        if source is None:
            source = open_source(spec, self.sources_stop, heartbeat.beat)
            if isinstance(source, VideoSource):
                source.problem = self.source_problems.get(spec.camera)
            self.sources[spec.camera] = source
        for frame in source:
            heartbeat.beat()
            while not self.sources_stop.is_set():
                try:
                    self.producer.submit(frame)
                    break
                except BackpressureTimeout as exc:
                    heartbeat.beat()
                    log.warning("source %s: backpressure, still waiting: %s", spec.camera, exc)
                except ProducerClosed:
                    return
            if self.sources_stop.is_set():
                return
        if not self.sources_stop.is_set():
            log.info("source %s ended", spec.camera)

    def _poll_stats(self, heartbeat: Heartbeat) -> None:
        """Queue depth, lag, pending and dead letters as gauges; also tells readiness whether the backend answers."""
        queue: FrameQueue | None = None
        while not self.stopping.is_set():
            heartbeat.beat()
            try:
                queue = queue or self.open_queue()
                shards = queue.shard_stats(self.settings.group)
                if not self.backend_reachable:
                    log.info("backend at %s answers again", self.address)
                self.backend_reachable, self.backend_error = True, None
                _export_queue_stats(self.settings.group, shards)
            except BackendUnavailable as exc:
                reason = self._backend_reason(exc)
                if reason != self.backend_error:
                    log.warning("%s", reason)
                self.backend_reachable, self.backend_error = False, reason
                if queue is not None and queue is not self.shared:
                    queue.close()
                queue = None
            metrics.ready.set(1 if self.ready()["ready"] else 0)
            self.stopping.wait(STATS_INTERVAL_S)

    # -- stop ---------------------------------------------------------------------------------------------
    def stop(self) -> int:
        """Drain in order within ``drain_timeout_s``; 0 when nothing was left behind."""
        deadline = time.monotonic() + self.settings.drain_timeout_s

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        self.stopping.set()
        self.sources_stop.set()
        clean = True
        if self.producer is not None:
            for thread in self.source_threads:
                thread.join(min(SOURCE_JOIN_S, remaining()))
                if thread.is_alive():
                    log.warning("%s is still in a read; not waiting for it", thread.name)
            clean = self.producer.flush(remaining())
            if not clean:
                held = self.producer.summary()
                frames = held["buffer_frames"] + held["spool_frames"]
                reasons = [reason for reason in self.ready()["reasons"] if reason != "stopping"]
                why = "; ".join(reasons) or "the backend did not take them in time"
                log.error("drain timeout: %d frames still held (%d of them spooled) are not published, counted as "
                          "dropped (shutdown_timeout): %s", frames, held["spool_frames"], why)
            self.producer.close(remaining())
            log.info("producer drained: %s", json.dumps(self.producer.summary()))
        if self.processes is not None:
            clean = self.processes.stop(remaining, WORKER_GRACE_S) and clean
        self.workers_stop.set()
        for thread in self.worker_threads:
            # At least WORKER_GRACE_S even when the flush used the whole limit: a worker ends its round first.
            thread.join(max(remaining(), WORKER_GRACE_S))
            if thread.is_alive():
                log.error("%s is still busy at the drain timeout (a handler or a backend call that does not "
                          "return); what it holds stays pending for the next consumer", thread.name)
                clean = False
        for worker in self.workers:
            log.info("worker %s: %s", worker.consumer, json.dumps(worker.summary()))
        if self.started:
            self.http.shutdown()
        self.http.server_close()
        log.info("stopped %s", "cleanly" if clean else
                 "with frames left behind (drain timeout, or a worker process that did not drain cleanly)")
        return 0 if clean else 1


def _export_queue_stats(group: str, shards: Sequence[QueueStats]) -> None:
    """The backlog gauges of ``group`` from each shard stream's stats (one with a single stream)."""
    for index, stats in enumerate(shards):
        shard = str(index)
        metrics.depth.labels(shard=shard).set(stats.depth)
        metrics.consumer_lag.labels(group=group, shard=shard).set(stats.lag)
        metrics.pending.labels(group=group, shard=shard).set(stats.pending)
        metrics.oldest_pending.labels(group=group, shard=shard).set(stats.oldest_pending_ms / 1000)
    metrics.dead_letter_depth.set(sum(stats.dead_letters for stats in shards))
