"""``frame-buffer demo``: producer and consumers together on local defaults, with a loss/duplicate audit.

Backend choice: Redis on the configured url if it answers; otherwise a throwaway ``redis-server`` on a free
port if the binary exists; otherwise the in-memory backend. The choice is printed.
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

import redis

from frame_buffer.cli import add_queue_options, queue_from, settings_from
from frame_buffer.config import Settings
from frame_buffer.frame import Frame
from frame_buffer.queue import FrameQueue
from frame_buffer.sources import parse_size
from frame_buffer.sources.synthetic import SyntheticSource
from frame_buffer.stats import percentiles_ms


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="producer and consumers together, with a final audit")
    add_queue_options(parser)
    parser.add_argument("--fps", type=float, default=200.0, help="frames per second per camera")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of publishing")
    parser.add_argument("--size", default="640x480", help="frame size WIDTHxHEIGHT")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--consumers", type=int, default=2)
    parser.set_defaults(func=run)


@dataclass
class Audit:
    """What came out, to compare with what went in."""

    seen: Counter[tuple[str, int]] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    nbytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


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
    if explicit or settings.backend != "redis" or _redis_answers(settings.redis_url):
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
                    raise RuntimeError(f"throwaway redis-server on port {port} did not start")
                time.sleep(0.05)
            yield settings.replace(redis_url=url), f"redis (throwaway redis-server on {url})"
        finally:
            process.terminate()
            process.wait()


def run(args: argparse.Namespace) -> int:
    base = settings_from(args).replace(stream=args.stream or "frame_queue_demo", group="demo")
    with _choose_backend(base, explicit=args.backend is not None) as (settings, why):
        print(f"demo: backend {why}, stream {settings.stream}", flush=True)
        shared: FrameQueue | None = queue_from(settings) if settings.backend == "memory" else None

        def open_queue() -> FrameQueue:
            return shared if shared is not None else queue_from(settings)

        return _run(args, settings, open_queue)


def _run(args: argparse.Namespace, settings: Settings, open_queue: Callable[[], FrameQueue]) -> int:
    shape = (*parse_size(args.size), 3)
    audit = Audit()
    published = Counter[str]()
    stop = threading.Event()

    def produce(camera: str) -> None:
        queue = open_queue()
        source = SyntheticSource(camera, fps=args.fps, shape=shape, count=int(args.fps * args.duration))
        for frame in source:
            queue.publish(Frame(frame.camera, frame.seq, frame.data))  # stamped now: latency from publish
            published[camera] += 1

    def consume(index: int) -> None:
        queue = open_queue()
        while not stop.is_set():
            batch = queue.consume(settings.group, f"demo-{index}", count=16, block_ms=100)
            wall = time.time_ns()
            with audit.lock:
                for delivery in batch:
                    audit.seen[(delivery.frame.camera, delivery.frame.seq)] += 1
                    audit.latencies_ms.append((wall - delivery.frame.ts_ns) / 1e6)
                    audit.nbytes += delivery.frame.nbytes
            queue.ack(batch)

    producers = [threading.Thread(target=produce, args=(f"cam{i}",)) for i in range(args.cameras)]
    consumers = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(args.consumers)]
    start = time.monotonic()
    for thread in consumers + producers:
        thread.start()
    expected = int(args.fps * args.duration) * args.cameras
    deadline = start + args.duration + 30
    while True:
        time.sleep(0.5)
        out = sum(audit.seen.values())
        print(f"demo: in {sum(published.values())}  out {out}", file=sys.stderr, flush=True)
        producing = any(thread.is_alive() for thread in producers)
        if (not producing and len(audit.seen) >= expected) or time.monotonic() > deadline:
            break
    stop.set()
    for thread in consumers:
        thread.join()
    seconds = time.monotonic() - start
    frames_in = sum(published.values())
    unique = len(audit.seen)
    lost = frames_in - unique
    duplicates = sum(audit.seen.values()) - unique
    lat = percentiles_ms(audit.latencies_ms)
    rows = [
        ("frames in", f"{frames_in}"), ("frames out", f"{sum(audit.seen.values())}"), ("lost", f"{lost}"),
        ("duplicates", f"{duplicates}"), ("frames/s", f"{unique / seconds:.0f}"),
        ("MB/s", f"{audit.nbytes / seconds / 1e6:.1f}"),
        ("latency p50 / p99 / p99.9 ms", f"{lat['p50']} / {lat['p99']} / {lat['p999']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")
    return 0 if lost == 0 and duplicates == 0 else 1
