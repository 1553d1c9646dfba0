"""``frame-buffer demo``: producer and consumers together on local defaults, with a loss/duplicate audit.

Backend choice: Redis on the configured url if it answers; otherwise a throwaway ``redis-server`` on a free
port if the binary exists; otherwise the in-memory backend. The choice is printed.

Frames go through the service's producer stack (adaptive buffer, breaker, spool), so the memory budget and
the frame size limit apply as they do in the service. The progress line counts frames out before frames in,
so out never shows above in. At the end it prints where the time went (p50/p99 of each stage of
``frame_queue_stage_seconds``, its consumers' audit timed as the handler) and the audit. The demo deletes
the stream and dead letters it created, and leaves alone whatever existed before it started.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pika
import pika.exceptions
import redis

from frame_buffer import metrics
from frame_buffer.commands import stages
from frame_buffer.commands.common import (
    add_queue_options,
    address,
    frame_size,
    integer,
    number,
    preflight,
    settings_from,
)
from frame_buffer.config import Settings
from frame_buffer.flow.producer import Producer
from frame_buffer.frame import Frame
from frame_buffer.queue import BackendRefused, BackendUnavailable, FrameQueue, QueueError, QueueSettings
from frame_buffer.queue.redis_streams import RedisQueue
from frame_buffer.sources.synthetic import SyntheticSource
from frame_buffer.start_checks import check_frame_size
from frame_buffer.stats import percentiles_ms

GROUP = "demo"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="producer and consumers together, with a final audit")
    add_queue_options(parser)
    parser.add_argument("--fps", type=number(0, 100_000, low_open=True), default=200.0,
                        help="frames per second per camera")
    parser.add_argument("--duration", type=number(0, 3600, low_open=True), default=5.0, help="seconds of publishing")
    parser.add_argument("--size", type=frame_size, default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--cameras", type=integer(1, 64), default=2, help="cameras, one thread each")
    parser.add_argument("--consumers", type=integer(1, 64), default=2, help="consumer threads")
    parser.set_defaults(func=run)


@dataclass
class Audit:
    """What came out, to compare with what went in."""

    seen: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    nbytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def unique(self) -> int:
        with self.lock:
            return len(self.seen)


def _redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


@contextmanager
def _choose_backend(settings: Settings, explicit: bool) -> Iterator[tuple[Settings, str]]:
    # A cluster is never replaced by a throwaway server: the user asked for that one.
    configured = explicit or settings.backend != "redis" or settings.redis_mode == "cluster"
    if configured or _redis_answers(settings.redis_url):
        yield settings, f"{settings.backend} (as configured)"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield settings.replace(backend="memory"), f"memory (no Redis at {settings.redis_url}, no redis-server)"
        return
    with tempfile.TemporaryDirectory() as workdir, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", workdir], stdout=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while not _redis_answers(url):
                if time.monotonic() > deadline:
                    raise BackendUnavailable(f"the throwaway redis-server on port {port} did not start in 10 s")
                time.sleep(0.05)
            yield settings.replace(redis_url=url), f"redis (throwaway redis-server on {url})"
        finally:
            process.terminate()
            process.wait()


def run(args: argparse.Namespace) -> int:
    base = settings_from(args).replace(stream=args.stream or "frame_queue_demo", group=GROUP)
    check_frame_size(base, (*args.size, 3), "--size")
    with _choose_backend(base, explicit=args.backend is not None) as (settings, why):
        print(f"demo: backend {why}, stream {settings.stream}", flush=True)
        existed = _existing(settings)
        preflight(settings, (GROUP,), outage_ok=False)
        print(f"demo: declares group {GROUP!r} on {settings.backend}:{settings.stream} and consumes it with "
              f"{args.consumers} consumer(s); "
              + (f"leaves {', '.join(sorted(existed))} as found" if existed else "deletes the stream at the end"),
              file=sys.stderr, flush=True)
        shared: FrameQueue | None = settings.open_queue() if settings.backend == "memory" else None

        def open_queue() -> FrameQueue:
            return shared if shared is not None else settings.open_queue()

        try:
            return _run(args, settings, open_queue)
        finally:
            _delete_created(settings, existed)


def _run(args: argparse.Namespace, settings: Settings, open_queue: Callable[[], FrameQueue]) -> int:
    shape = (*args.size, 3)
    audit = Audit()
    stop = threading.Event()
    failures: list[BaseException] = []
    producer = Producer(open_queue, policy=settings.policy, budget_bytes=settings.buffer_budget_bytes,
                        block_timeout_s=settings.publish_timeout_s, codec=settings.codec())

    def produce(camera: str) -> None:
        try:
            for frame in SyntheticSource(camera, fps=args.fps, shape=shape, count=int(args.fps * args.duration),
                                         stop=stop):
                producer.submit(Frame(frame.camera, frame.seq, frame.data))  # stamped now: latency from submit
        except Exception as exc:  # reported by the main thread, which stops the demo
            failures.append(exc)
            stop.set()

    def consume(index: int) -> None:
        try:
            queue = open_queue()
        except Exception as exc:
            failures.append(exc)
            stop.set()
            return
        try:
            while not stop.is_set():
                batch = queue.consume(settings.group, f"demo-{index}", count=16, block_ms=100)
                wall = time.time_ns()
                with audit.lock:  # the audit is this consumer's handler: timed as the worker times one
                    for delivery in batch:
                        started = time.perf_counter_ns()
                        audit.seen[(delivery.frame.camera, delivery.frame.seq)] += 1
                        audit.latencies_ms.append((wall - delivery.frame.ts_ns) / 1e6)
                        audit.nbytes += delivery.frame.nbytes
                        metrics.observe_stage("handler", time.perf_counter_ns() - started)
                started = time.perf_counter_ns()
                queue.ack(batch)
                metrics.observe_stage("ack", time.perf_counter_ns() - started, len(batch))
        except Exception as exc:
            failures.append(exc)
            stop.set()
        finally:
            if settings.backend != "memory":  # the memory queue is the one shared instance
                queue.close()

    stages_before = stages.snapshot()
    producers = [threading.Thread(target=produce, args=(f"cam{i}",), daemon=True) for i in range(args.cameras)]
    consumers = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(args.consumers)]
    start = time.monotonic()
    for thread in consumers + producers:
        thread.start()
    try:
        _progress(audit, producer, lambda: any(thread.is_alive() for thread in producers), stop,
                  start + args.duration + 30)
        producer.close(settings.drain_timeout_s)
        _progress(audit, producer, lambda: audit.unique() < producer.published, stop,
                  time.monotonic() + settings.drain_timeout_s + 10)
    finally:
        stop.set()
        producer.close(0.1)
        for thread in consumers:
            thread.join()
    if failures:
        raise failures[0]
    print()
    stages.print_breakdown(stages.breakdown(stages_before, stages.snapshot()), sys.stdout)
    return _report(audit, producer, time.monotonic() - start)


def _progress(audit: Audit, producer: Producer, going: Callable[[], bool], stop: threading.Event,
              deadline: float) -> None:
    """Print in/out twice a second while ``going()``; out is read first, so it never shows above in."""
    while going() and not stop.wait(0.5) and time.monotonic() < deadline:
        out = audit.unique()
        print(f"demo: in {producer.submitted}  out {out}", file=sys.stderr, flush=True)


def _report(audit: Audit, producer: Producer, seconds: float) -> int:
    frames_in = producer.submitted
    unique = audit.unique()
    lost = frames_in - unique
    duplicates = sum(audit.seen.values()) - unique
    lat = percentiles_ms(audit.latencies_ms)
    rows = [
        ("frames in", f"{frames_in}"), ("frames out", f"{unique}"), ("lost", f"{lost}"),
        ("duplicates", f"{duplicates}"), ("frames/s", f"{unique / seconds:.0f}"),
        ("MB/s", f"{audit.nbytes / seconds / 1e6:.1f}"),
        ("latency p50 / p99 / p99.9 ms", f"{lat['p50']} / {lat['p99']} / {lat['p999']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")
    return 0 if lost == 0 and duplicates == 0 else 1


# -- what the demo created, and only that, is deleted at the end ---------------------------------------
def _redis_queue(settings: Settings) -> RedisQueue:
    """The demo's queue without declaring its group (that would create the stream)."""
    queue = settings.open_queue(groups=())
    assert isinstance(queue, RedisQueue)  # settings.backend is redis
    return queue


def _existing(settings: Settings) -> set[str]:
    """Which of the streams and dead-letter streams exist before the demo starts (none on memory)."""
    if settings.backend == "redis":
        with _redis_queue(settings) as queue:
            return queue.existing_keys()
    if settings.backend == "rabbitmq":
        return _rabbitmq_existing(settings)
    return set()


def _rabbitmq_existing(settings: Settings) -> set[str]:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    except pika.exceptions.ProbableAuthenticationError as exc:
        raise BackendRefused(f"{address(settings)} refused the credentials: {exc!r}") from None
    except pika.exceptions.AMQPError as exc:
        raise BackendUnavailable(f"{address(settings)} unavailable: {exc!r}") from None
    found = set()
    try:
        for name, passive in ((settings.stream, "exchange"), (f"{settings.stream}:dlq", "queue")):
            channel = connection.channel()
            try:
                if passive == "exchange":
                    channel.exchange_declare(name, passive=True)
                else:
                    channel.queue_declare(name, passive=True)
                found.add(name)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass  # 404: not there (the broker closed the channel)
    finally:
        connection.close()
    return found


def _delete_created(settings: Settings, existed: set[str]) -> None:
    """Delete the stream, its dead letters and (RabbitMQ) their queues, when none of them existed before."""
    if existed or settings.backend == "memory":
        return
    try:
        if settings.backend == "redis":
            with _redis_queue(settings) as queue:
                queue.delete_keys()
        else:
            from frame_buffer.queue.rabbitmq import delete_topology

            delete_topology(settings.amqp_url, QueueSettings(stream=settings.stream), (GROUP,))
    except (QueueError, pika.exceptions.AMQPError) as exc:
        print(f"demo: could not delete the stream {settings.stream} at the end: {exc!r}", file=sys.stderr)
