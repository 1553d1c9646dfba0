"""``frame-buffer run``: start the service (:mod:`frame_buffer.service`), wait for SIGTERM or SIGINT, drain.

A stop signal at any moment after ``run`` began is remembered (``stop_signals.py``): during the start it
stops the service from starting, afterwards it starts the drain. The exit code is the drain's: 0 when clean,
1 when frames were left behind.
"""

from __future__ import annotations

import argparse
import logging
import signal

from frame_buffer import logs
from frame_buffer.commands.common import add_queue_options, settings_from
from frame_buffer.service import Service
from frame_buffer.stop_signals import StopSignals

#: The service's logger: start and drain are one story in the log.
log = logging.getLogger("frame_buffer.service")


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


