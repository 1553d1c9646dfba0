"""First measurement of the shared-memory payload store (issue 18) against inline Redis, in one run.

For each payload store (inline, shm) and size: a consumer process (checksum verification on, so it reads
every byte of every payload) and a producer process publishing prebuilt frames one ``publish`` at a time
(inline: the array's memory goes to the socket; shm: one copy into a slot). Throughput is frames over the
time from the producer's start to the consumer's last ack; a paced run gives capture-to-receive latency.
A redis-server of its own on a free port (no persistence, maxmemory 2 GB, noeviction).

    PYTHONPATH=service .venv/bin/python scripts/shm_bench.py
"""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import numpy as np
import redis

from frame_buffer.frame import Frame
from frame_buffer.queue import QueueSettings, open_queue

SIZES = {"1920x1080x3": (1080, 1920, 3), "640x480x3": (480, 640, 3)}
GROUP = "bench"


@dataclass(frozen=True)
class Case:
    """One run: where, which store, what size, how many frames, at what rate (0: as fast as possible)."""

    url: str
    stream: str
    store: str
    shm_dir: str
    shape: tuple[int, ...]
    count: int
    rate: float

    def open(self, groups: tuple[str, ...] = ()) -> object:
        settings = QueueSettings(stream=self.stream, groups=groups, max_lag=200, payload_store=self.store,  # type: ignore[arg-type]
                                 shm_dir=self.shm_dir, shm_bytes=1 << 30)
        return open_queue("redis", redis_url=self.url, settings=settings)


def produce(case: Case) -> None:
    queue: Any = case.open()
    frames = [np.random.default_rng(n).integers(0, 255, case.shape, np.uint8) for n in range(4)]
    start = time.perf_counter()
    for seq in range(case.count):
        if case.rate:
            due = start + seq / case.rate
            while (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
        queue.publish(Frame("cam", seq, frames[seq % 4]))
    queue.close()


def consume(case: Case, results: Queue[object]) -> None:
    queue: Any = case.open((GROUP,))
    results.put("ready")
    latencies, got, touched = [], 0, 0
    while got < case.count:
        batch = queue.consume(GROUP, "c1", count=16, block_ms=1000)
        now = time.time_ns()
        for delivery in batch:
            latencies.append((now - delivery.frame.ts_ns) / 1e6)
            touched += int(delivery.frame.data[0, 0, 0])  # the checksum already read every byte
        queue.ack(batch)
        got += len(batch)
    results.put((time.perf_counter(), latencies))
    queue.close()


def run(case: Case) -> tuple[float, float, float]:
    """(frames/s, p50 ms, p99 ms) of one run."""
    ctx = multiprocessing.get_context("spawn")
    results: Queue[object] = ctx.Queue()
    consumer = ctx.Process(target=consume, args=(case, results))
    consumer.start()
    assert results.get(timeout=60) == "ready"
    producer = ctx.Process(target=produce, args=(case,))
    start = time.perf_counter()
    producer.start()
    end, latencies = results.get(timeout=600)  # type: ignore[misc]
    producer.join()
    consumer.join()
    client = redis.Redis.from_url(case.url)
    client.delete(case.stream, f"{case.stream}:dlq")
    shutil.rmtree(Path(case.shm_dir) / case.stream, ignore_errors=True)
    kept = np.array(latencies[len(latencies) // 10 :])  # the first tenth is warm-up
    return case.count / (end - start), float(np.percentile(kept, 50)), float(np.percentile(kept, 99))


def main() -> None:
    port = 6500 + int(uuid.uuid4().int % 400)
    workdir = Path(tempfile.mkdtemp(prefix="shm-bench-"))
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--maxmemory", "2gb", "--maxmemory-policy", "noeviction",
                               "--dir", str(workdir), "--logfile", str(workdir / "redis.log")])
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)
    shm_dir = tempfile.mkdtemp(prefix="fb-bench-", dir="/dev/shm")
    plan = [("1920x1080x3", 600, 0.0), ("640x480x3", 3000, 0.0), ("1920x1080x3", 500, 50.0)]
    if len(sys.argv) > 1:
        plan.append(("1920x1080x3", 1500, float(sys.argv[1])))
    print("| payload | store | frames | paced at | frames/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    try:
        for size, count, rate in plan:
            for store in ("inline", "shm"):
                if store == "inline" and rate > 100:
                    continue
                stream = f"shm_bench_{uuid.uuid4().hex[:8]}"
                fps, p50, p99 = run(Case(url, stream, store, shm_dir, SIZES[size], count, rate))
                paced = f"{rate:g}/s" if rate else "unpaced"
                print(f"| {size} | {store} | {count} | {paced} | {fps:.0f} | {p50:.2f} | {p99:.2f} |", flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(shm_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
