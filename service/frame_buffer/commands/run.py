"""``frame-buffer run``: start the service (:mod:`frame_buffer.service`), wait for SIGTERM or SIGINT, drain.

A stop signal at any moment after ``run`` began is remembered (``stop_signals.py``): during the start it
stops the service from starting, afterwards it starts the drain. The exit code is the drain's: 0 when clean,
1 when frames were left behind (or a worker process failed its drain).

``--role`` picks what this process runs (``ingest``, ``workers`` or ``all``); ``--worker-processes N`` runs the
workers in N child processes, each of them this command with ``--role workers`` and ``--status-fd``, on
which the child reports its pid and HTTP port once started, and its final counters once drained, so that the
parent's totals include the frames acked during the drain (``worker_processes.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal

from frame_buffer import logs
from frame_buffer.commands.common import add_queue_options, settings_from
from frame_buffer.errors import ConfigError
from frame_buffer.service import Service
from frame_buffer.stop_signals import StopSignals
from frame_buffer.worker_processes import watch_parent

#: The service's logger: start and drain are one story in the log.
log = logging.getLogger("frame_buffer.service")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("run", help="run the service: sources, workers, metrics endpoint")
    add_queue_options(parser)
    parser.add_argument("--http-port", type=int, help="port of /metrics, /healthz, /readyz (default 8080)")
    parser.add_argument("--role", choices=("all", "ingest", "workers"),
                        help="what this process runs: sources and producer (ingest), consumers (workers), or both "
                             "(all, the default)")
    parser.add_argument("--workers", type=int, help="consumer threads (default 2), per worker process if any")
    parser.add_argument("--worker-processes", type=int,
                        help="run the workers in N child processes (default 0: threads of this process)")
    parser.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)  # set by a parent for its worker process
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
                             handler=args.handler, cpu_wake_latency_us=args.cpu_wake_latency_us, role=args.role,
                             worker_processes=args.worker_processes)
    logs.configure(settings.log_format, settings.log_level)
    status = ParentReport(args.status_fd) if args.status_fd is not None else None
    wake_latency = settings.wake_latency_request()  # before anything starts: refused, it stops the start
    if wake_latency is not None:
        log.info("holding a CPU wake-up latency bound of %d us", wake_latency.microseconds)
    try:
        service = Service(settings)
        if signals.requested:
            log.info("stop signal during start-up: not starting")
        else:
            service.start()
            if status is not None:
                status.send({"pid": os.getpid(), "port": service.port})
                watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
        number = signals.wait()
        log.info("signal %s: draining", signal.Signals(number or signal.SIGTERM).name)
        code = service.stop()
        if status is not None and service.started:
            status.send({"final": {"exit_code": code, "metrics": service.exposition().decode()}})
        if len(signals.received) > 1:
            log.info("%d more stop signals came during the drain; ignored (the drain has its own time limit)",
                     len(signals.received) - 1)
        return code
    finally:
        if status is not None:
            status.close()
        if wake_latency is not None:
            wake_latency.close()


class ParentReport:
    """A worker process's status pipe to its parent: one JSON line at the start, one after the drain."""

    def __init__(self, fd: int) -> None:
        try:
            self.pipe = os.fdopen(fd, "w")
        except OSError as exc:
            raise ConfigError(f"--status-fd {fd}: {exc.strerror or exc} (set by a parent for its worker "
                              "process, not by hand)") from None

    def send(self, report: dict[str, object]) -> None:
        try:
            self.pipe.write(json.dumps(report) + "\n")
            self.pipe.flush()
        except OSError:  # the parent is gone (EPIPE): nobody to tell, the drain goes on by itself
            log.info("the parent's status pipe is closed; not reporting %s", ", ".join(report))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.close()


