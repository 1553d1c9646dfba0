"""``frame-buffer run``: the long-running process deployed on nebula.

Sources -> Producer (adaptive buffer, breaker, spool) -> queue -> N Workers -> handler, with ``/metrics``,
``/healthz`` and ``/readyz`` over HTTP. SIGTERM or SIGINT drains in order: stop the sources, flush buffer and
spool, let the workers finish and ack what they hold, then exit 0 (1 if the drain timed out and frames were
left unpublished, which are then counted as dropped with reason ``shutdown_timeout``).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frame_buffer import logs, metrics
from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.config import Settings
from frame_buffer.flow.producer import Producer
from frame_buffer.flow.retry import RetryPolicy
from frame_buffer.flow.worker import Worker
from frame_buffer.handlers import load_handler
from frame_buffer.queue import BackendUnavailable, BackpressureTimeout, FrameQueue
from frame_buffer.sources import SourceSpec, open_source

log = logging.getLogger("frame_buffer.service")
STATS_INTERVAL_S = 2.0


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


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def run(args: argparse.Namespace) -> int:
    sources = () if args.no_sources else (tuple(args.sources) if args.sources else None)
    settings = settings_from(args, http_port=args.http_port, workers=args.workers, sources=sources,
                             handler=args.handler, cpu_wake_latency_us=args.cpu_wake_latency_us)
    logs.configure(settings.log_format, settings.log_level)
    wake_latency = settings.wake_latency_request()  # before anything starts: refused, it stops the start
    if wake_latency is not None:
        log.info("holding a CPU wake-up latency bound of %d us", wake_latency.microseconds)
    # Blocked before any thread starts, so that every thread inherits the mask (FFmpeg's decoder threads
    # too) and the signal can only be taken here. With a handler instead, a SIGTERM that the kernel gave
    # to another thread left the main thread asleep in Event.wait(): the RTSP test saw the service ignore
    # SIGTERM for over 60 s.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        service = Service(settings)
        service.start()
        number = signal.sigwait(_STOP_SIGNALS)
        log.info("signal %d: draining", number)
        return service.stop()  # a second signal meanwhile stays blocked: the drain has its own time limit
    finally:
        if wake_latency is not None:
            wake_latency.close()


class Service:
    """Everything ``run`` starts, and the order in which it is stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = [SourceSpec.parse(text) for text in settings.sources]
        self.handler = load_handler(settings.handler)
        self.stopping = threading.Event()
        self.sources_stop = threading.Event()
        self.workers_stop = threading.Event()
        self.backend_reachable = False
        self.producer: Producer | None = None
        self.workers: list[Worker] = []
        self.source_threads: list[threading.Thread] = []
        self.worker_threads: list[threading.Thread] = []
        self.http = ThreadingHTTPServer((settings.http_host, settings.http_port), _handler_for(self))
        self.shared: FrameQueue | None = queue_from(settings) if settings.backend == "memory" else None

    def open_queue(self) -> FrameQueue:
        """A queue of the worker's or publisher's own (the memory backend is shared)."""
        return self.shared if self.shared is not None else queue_from(self.settings)

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    def ready(self) -> dict[str, Any]:
        """Readiness: backend reachable and the breaker closed; otherwise degraded, with why."""
        breaker = self.producer.breaker.state if self.producer else "closed"
        spooled = len(self.producer.spool) if self.producer else 0
        ok = self.backend_reachable and breaker == "closed" and not self.stopping.is_set()
        return {"ready": ok, "status": "ready" if ok else "degraded", "backend": self.settings.backend,
                "backend_reachable": self.backend_reachable, "breaker": breaker, "spool_frames": spooled,
                "stopping": self.stopping.is_set()}

    # -- start --------------------------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.settings
        metrics.initialise([spec.camera for spec in self.specs], [settings.group])
        self._spawn(self.http.serve_forever, "http")
        self._spawn(self._poll_stats, "stats")
        log.info("serving /metrics /healthz /readyz on %s:%d", settings.http_host, self.port)
        retry = RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s,
                            max_attempts=settings.max_deliveries)
        for index in range(settings.workers):
            worker = Worker(self.open_queue, settings.group, f"{settings.consumer_prefix}-{index}", self.handler,
                            retry=retry)
            self.workers.append(worker)
            self.worker_threads.append(
                self._spawn(lambda w=worker: w.run(self.workers_stop), f"worker-{index}")  # type: ignore[misc]
            )
        if self.specs:
            self.producer = Producer(self.open_queue, policy=settings.policy,
                                     budget_bytes=settings.buffer_budget_bytes,
                                     block_timeout_s=settings.publish_timeout_s, codec=settings.codec())
            for spec in self.specs:
                thread = self._spawn(lambda s=spec: self._ingest(s), f"source-{spec.camera}")  # type: ignore[misc]
                self.source_threads.append(thread)
        log.info("started: backend %s, stream %s, group %s, %d workers, sources %s", settings.backend,
                 settings.stream, settings.group, settings.workers, [spec.camera for spec in self.specs] or "none")

    def _spawn(self, target: Callable[[], object], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _ingest(self, spec: SourceSpec) -> None:
        """Feed one source into the producer until the sources are stopped (or the source ends)."""
        assert self.producer is not None
        for frame in open_source(spec):
            while not self.sources_stop.is_set():
                try:
                    self.producer.submit(frame)
                    break
                except BackpressureTimeout as exc:
                    log.warning("source %s: backpressure, still waiting: %s", spec.camera, exc)
            if self.sources_stop.is_set():
                return
        log.info("source %s ended", spec.camera)

    def _poll_stats(self) -> None:
        """Queue depth, lag, pending and dead letters as gauges; also tells readiness whether the backend answers."""
        queue: FrameQueue | None = None
        while not self.stopping.is_set():
            try:
                queue = queue or self.open_queue()
                stats = queue.stats(self.settings.group)
                self.backend_reachable = True
                metrics.depth.set(stats.depth)
                metrics.consumer_lag.labels(group=self.settings.group).set(stats.lag)
                metrics.pending.labels(group=self.settings.group).set(stats.pending)
                metrics.oldest_pending.labels(group=self.settings.group).set(stats.oldest_pending_ms / 1000)
                metrics.dead_letter_depth.set(stats.dead_letters)
            except BackendUnavailable as exc:
                if self.backend_reachable:
                    log.warning("backend unreachable: %s", exc)
                self.backend_reachable = False
                if queue is not None and queue is not self.shared:
                    queue.close()
                queue = None
            metrics.ready.set(1 if self.ready()["ready"] else 0)
            self.stopping.wait(STATS_INTERVAL_S)

    # -- stop ---------------------------------------------------------------------------------------------
    def stop(self) -> int:
        """Drain in order within ``drain_timeout_s``; 0 when nothing was left behind."""
        deadline = time.monotonic() + self.settings.drain_timeout_s
        self.stopping.set()
        self.sources_stop.set()
        clean = True
        if self.producer is not None:
            for thread in self.source_threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            clean = self.producer.flush(max(0.0, deadline - time.monotonic()))
            self.producer.close(max(0.0, deadline - time.monotonic()))
            summary = self.producer.summary()
            log.info("producer drained: %s", json.dumps(summary))
        self.workers_stop.set()
        for thread in self.worker_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            clean = clean and not thread.is_alive()
        for worker in self.workers:
            log.info("worker %s: %s", worker.consumer, json.dumps(worker.summary()))
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
                self._send(200, b'{"status": "alive"}\n', "application/json")
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
