"""``frame-buffer run``: the long-running process deployed on nebula.

Sources -> Producer (adaptive buffer, breaker, spool) -> queue -> N Workers -> handler, with ``/metrics``,
``/healthz`` and ``/readyz`` over HTTP.

Start: every setting, source spec and the handler are checked, files and streams are opened once, the backend
is asked once (refused credentials stop the start; an unreachable backend does not: the service starts
degraded and spools), and the HTTP port is bound, all before any thread starts. Every thread then runs under a
:class:`~frame_buffer.supervisor.Supervisor`. SIGTERM or SIGINT (see ``stop_signals.py``), at any moment after
``run`` began, drains in order: stop the sources, flush buffer and spool, let the workers finish and ack what
they hold, then exit 0 (1 if the drain timed out and frames were left unpublished, which are then counted as
dropped with reason ``shutdown_timeout``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frame_buffer import logs, metrics
from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.config import Settings
from frame_buffer.errors import ConfigError
from frame_buffer.flow.backpressure import ProducerClosed
from frame_buffer.flow.buffer import FRAME_OVERHEAD_BYTES
from frame_buffer.flow.producer import Producer
from frame_buffer.flow.retry import RetryPolicy
from frame_buffer.flow.worker import Worker
from frame_buffer.handlers import load_handler
from frame_buffer.queue import BackendRefused, BackendUnavailable, BackpressureTimeout, FrameQueue
from frame_buffer.sources import SourceSpec, open_source, parse_size, probe_source
from frame_buffer.sources.synthetic import SyntheticSource
from frame_buffer.sources.video import READ_TIMEOUT_S, VideoSource
from frame_buffer.stop_signals import StopSignals
from frame_buffer.supervisor import STALL_LIMIT_S, Heartbeat, Supervisor

log = logging.getLogger("frame_buffer.service")
STATS_INTERVAL_S = 2.0
#: How long the drain waits for a source thread: one blocked read ends within READ_TIMEOUT_S.
SOURCE_JOIN_S = READ_TIMEOUT_S + 1.0
#: The least time a worker gets to finish its round at the drain, after the producer's flush.
WORKER_GRACE_S = 1.0
#: What the producer's budget charges a frame beyond its pixels: bookkeeping, and a generous header.
_FRAME_OVERHEAD = FRAME_OVERHEAD_BYTES + 512


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("run", help="run the service: sources, workers, metrics endpoint")
    add_queue_options(parser)
    parser.add_argument("--http-port", type=int, help="port of /metrics, /healthz, /readyz (default 8080)")
    parser.add_argument("--workers", type=int, help="consumer threads (default 2)")
    parser.add_argument("--source", action="append", dest="sources",
                        help="kind:camera[:key=value...]; repeat for several (default from FRAME_BUFFER_SOURCES)")
    parser.add_argument("--no-sources", action="store_true", help="consume only")
    parser.add_argument("--handler", help="module:function called with each frame")
    parser.add_argument("--cpu-wake-latency-us", type=int,
                        help="hold a bound on idle CPUs' wake-up latency while running (0: they poll; needs root)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start, wait for SIGTERM or SIGINT, drain; the exit code."""
    signals = StopSignals()  # first of all: from here on a stop signal is remembered, never fatal
    try:
        return _run(args, signals)
    finally:
        signals.close()


def _run(args: argparse.Namespace, signals: StopSignals) -> int:
    sources = () if args.no_sources else (tuple(args.sources) if args.sources else None)
    settings = settings_from(args, http_port=args.http_port, workers=args.workers, sources=sources,
                             handler=args.handler, cpu_wake_latency_us=args.cpu_wake_latency_us)
    logs.configure(settings.log_format, settings.log_level)
    wake_latency = settings.wake_latency_request()  # before anything starts: refused, it stops the start
    if wake_latency is not None:
        log.info("holding a CPU wake-up latency bound of %d us", wake_latency.microseconds)
    try:
        service = Service(settings)
        if signals.requested:
            log.info("stop signal during start-up: not starting")
        else:
            service.start()
        number = signals.wait()
        log.info("signal %s: draining", signal.Signals(number or signal.SIGTERM).name)
        code = service.stop()
        if len(signals.received) > 1:
            log.info("%d more stop signals came during the drain; ignored (the drain has its own time limit)",
                     len(signals.received) - 1)
        return code
    finally:
        if wake_latency is not None:
            wake_latency.close()


def stall_limit(settings: Settings) -> float:
    """The supervisor's stall limit: setting ``stall_timeout_s`` (``FRAME_BUFFER_STALL_TIMEOUT_S``, 60 s).

    It must be longer than ``publish_timeout_s``: a publish (and a source's submit) under backpressure waits
    that long without a heartbeat, and must not look like a stall.
    """
    limit = float(getattr(settings, "stall_timeout_s", STALL_LIMIT_S))
    if limit <= settings.publish_timeout_s:
        raise ConfigError(f"FRAME_BUFFER_STALL_TIMEOUT_S: must be longer than FRAME_BUFFER_PUBLISH_TIMEOUT_S "
                          f"({settings.publish_timeout_s:g} s, the longest wait under backpressure), got {limit:g}")
    return limit


def backend_address(settings: Settings) -> str:
    """``host:port`` (or socket path) of the configured backend, for reasons on /readyz."""
    if settings.backend == "memory":
        return "memory"
    url = urlsplit(settings.redis_url if settings.backend == "redis" else settings.amqp_url)
    if url.scheme == "unix":
        return url.path
    default = 6379 if settings.backend == "redis" else (5671 if url.scheme == "amqps" else 5672)
    try:
        port = url.port or default
    except ValueError:
        port = default
    return f"{url.hostname or '127.0.0.1'}:{port}"


class _HTTPServer(ThreadingHTTPServer):
    """Beats the http thread's heartbeat on every poll of ``serve_forever``."""

    daemon_threads = True
    heartbeat: Heartbeat | None = None

    def service_actions(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat()


class Service:
    """Everything ``run`` starts, and the order in which it is stopped.

    The constructor checks and opens everything that can be wrong (sources, handler, backend credentials,
    the HTTP address) and raises a :class:`~frame_buffer.errors.FrameBufferError` naming it; no thread runs yet.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = [SourceSpec.parse(text) for text in settings.sources]
        self._check_sources()
        self.handler = load_handler(settings.handler)
        self.supervisor = Supervisor(stall_limit_s=stall_limit(settings))
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
        self.shared: FrameQueue | None = queue_from(settings) if settings.backend == "memory" else None
        self.backend_error = self._check_backend()
        self.backend_reachable = self.backend_error is None
        self.http = self._bind()

    def _check_sources(self) -> None:
        """One camera per source, and synthetic frames that the codec and the memory budget can hold."""
        seen: set[str] = set()
        for spec in self.specs:
            if spec.camera in seen:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: camera {spec.camera} is given twice")
            seen.add(spec.camera)
            if spec.kind != "synthetic":
                continue
            height, width = parse_size(spec.options.get("size", "640x480"))
            size = width * height * 3
            if size > self.settings.max_frame_bytes:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: source {spec.name}: frames of {size} bytes are larger "
                                  f"than FRAME_BUFFER_MAX_FRAME_BYTES ({self.settings.max_frame_bytes})")
            if size + _FRAME_OVERHEAD > self.settings.buffer_budget_bytes:
                raise ConfigError(f"FRAME_BUFFER_SOURCES: source {spec.name}: frames of {size} bytes do not fit in "
                                  f"FRAME_BUFFER_BUFFER_BUDGET_BYTES ({self.settings.buffer_budget_bytes})")

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

    def _bind(self) -> _HTTPServer:
        host, port = self.settings.http_host, self.settings.http_port
        try:
            return _HTTPServer((host, port), _handler_for(self))
        except socket.gaierror as exc:
            raise ConfigError(f"FRAME_BUFFER_HTTP_HOST: cannot listen on {host}:{port}: {exc.strerror}") from None
        except OSError as exc:
            name = "FRAME_BUFFER_HTTP_HOST" if exc.errno == 99 else "FRAME_BUFFER_HTTP_PORT"  # 99: EADDRNOTAVAIL
            raise ConfigError(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def open_queue(self) -> FrameQueue:
        """A queue of the worker's or publisher's own (the memory backend is shared)."""
        return self.shared if self.shared is not None else queue_from(self.settings)

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    # -- health -------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness: every supervised thread alive and making progress (see supervisor.py)."""
        problems = self.supervisor.problems()
        return {"alive": not problems, "status": "alive" if not problems else "unhealthy", "problems": problems,
                "threads": self.supervisor.threads()}

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
        ok = not reasons
        return {"ready": ok, "status": "ready" if ok else "degraded", "reasons": reasons,
                "backend": self.settings.backend, "backend_address": self.address,
                "backend_reachable": self.backend_reachable, "breaker": breaker, "spool_frames": spooled,
                "sources": sources, "stopping": self.stopping.is_set()}

    # -- start --------------------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        spawn = self.supervisor.spawn
        self.started = True
        metrics.initialise([spec.camera for spec in self.specs], [settings.group])
        spawn("http", self._serve_http, self.stopping)
        spawn("stats", self._poll_stats, self.stopping)
        log.info("serving /metrics /healthz /readyz on %s:%d", settings.http_host, self.port)
        retry = RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                            max_attempts=settings.max_deliveries)
        for index in range(settings.workers):
            worker = Worker(self.open_queue, settings.group, f"{settings.consumer_prefix}-{index}", self.handler,
                            retry=retry)
            self.workers.append(worker)
            self.worker_threads.append(spawn(
                f"worker-{index}", lambda beat, w=worker: w.run(self.workers_stop, beat.beat),  # type: ignore[misc]
                self.workers_stop))
        if self.specs:
            self.producer = Producer(self.open_queue, policy=settings.policy,
                                     budget_bytes=settings.buffer_budget_bytes,
                                     block_timeout_s=settings.publish_timeout_s, codec=settings.codec(), spawn=spawn)
            for spec in self.specs:
                self.source_threads.append(spawn(
                    f"source-{spec.camera}", lambda beat, s=spec: self._ingest(s, beat),  # type: ignore[misc]
                    self.sources_stop))
        log.info("started: backend %s, stream %s, group %s, %d workers, sources %s", settings.backend,
                 settings.stream, settings.group, settings.workers, [spec.camera for spec in self.specs] or "none")

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
                stats = queue.stats(self.settings.group)
                if not self.backend_reachable:
                    log.info("backend at %s answers again", self.address)
                self.backend_reachable, self.backend_error = True, None
                metrics.depth.set(stats.depth)
                metrics.consumer_lag.labels(group=self.settings.group).set(stats.lag)
                metrics.pending.labels(group=self.settings.group).set(stats.pending)
                metrics.oldest_pending.labels(group=self.settings.group).set(stats.oldest_pending_ms / 1000)
                metrics.dead_letter_depth.set(stats.dead_letters)
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
        log.info("stopped %s", "cleanly" if clean else "with frames left behind (drain timeout)")
        return 0 if clean else 1


def _handler_for(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                health = service.health()
                self._send(200 if health["alive"] else 503, json.dumps(health).encode() + b"\n", "application/json")
            elif self.path == "/readyz":
                state = service.ready()
                self._send(200 if state["ready"] else 503, json.dumps(state).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Access logs stay out of the event log."""

    return Handler
