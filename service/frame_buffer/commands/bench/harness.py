"""The bench's harness: pacing, a producer in a process of its own, and this project's queue measured the
same way the raw baselines (``redis_raw.py``, ``pika_raw.py``) measure their clients.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from frame_buffer.codec import FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue import FrameQueue, QueueSettings, RedisOptions, open_queue
from frame_buffer.sources.synthetic import test_pattern

#: The consumer group every run reads with.
GROUP = "bench"
#: The first 1/WARMUP_FRACTION of each latency run's samples are warm-up and not counted.
WARMUP_FRACTION = 10
#: Cameras of a throughput run, one per batch in turn: with shard streams (cluster mode) a camera's frames go to
#: its shard, so one camera would load one shard and one master. Each batch stays one camera, one shard, one
#: round trip, as a camera's burst would be.
CAMERAS = 16


def pace(rate: float, count: int, publish: Callable[[int, int], object],
         sleep: Callable[[float], object] = time.sleep) -> None:
    """Call ``publish(seq, due_ns)`` ``count`` times at ``rate`` per second.

    ``due_ns`` (wall clock) is when the frame was due: every case stamps its frames with it, as a camera
    stamps capture time, so a sender that falls behind its schedule counts as latency on every side alike
    (the service path's synthetic source stamps the same way).

    Args:
        rate: calls per second.
        count: number of calls.
        publish: called with the sequence number, 0 to ``count - 1``, and the due time.
        sleep: waits between calls; pika's publisher passes its connection's, which keeps serving I/O.
    """
    start, start_ns = time.perf_counter(), time.time_ns()
    for seq in range(count):
        delay = start + seq / rate - time.perf_counter()
        if delay > 0:
            sleep(delay)
        publish(seq, start_ns + round(seq * 1e9 / rate))


def start_producer(target: Callable[..., None], *args: Any, **kwargs: Any) -> BaseProcess:
    """Run a latency run's producer, ``target(*args, **kwargs)``, in a process of its own.

    Camera ingest and analysis workers are separate processes in a deployment. As threads of one process
    they would share the GIL: a frame's consumer then waits for the producer's Python code and the other way
    round, which measured here doubled p50 and p99 for this project and for raw redis-py alike. Spawned, not
    forked, because the bench process has threads of its own.
    """
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, kwargs=kwargs, daemon=True)
    process.start()
    return process


def producer_gone(process: BaseProcess, received: int, count: int) -> None:
    """Raise when ``process`` has ended while frames are still missing and none arrived in the last wait."""
    if not process.is_alive():
        process.join()
        raise RuntimeError(f"the latency run's producer exited with code {process.exitcode} "
                           f"after {received} of {count} frames had arrived")


def after_warmup(samples: list[float]) -> list[float]:
    """The samples of a latency run without its first tenth, in arrival order.

    The first frames of a run pay for first-use costs on both sides (the consumer's recovery sweep of its
    own pending entries, allocator growth, cold caches): about 1% of a 3 s run, exactly what p99 sees.
    """
    return samples[len(samples) // WARMUP_FRACTION:]


# -- this project's backends ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The queue under test, as a producer process needs it (picklable, unlike a closure)."""

    backend: str
    redis_url: str
    amqp_url: str
    settings: QueueSettings
    redis_options: RedisOptions | None = None

    def open(self) -> FrameQueue:
        """A new connection to the queue, with the bench's codec."""
        return open_queue(self.backend, redis_url=self.redis_url, amqp_url=self.amqp_url, settings=self.settings,
                          codec=FrameCodec(checksum="xxh3", max_frame_bytes=64 * 2**20),
                          redis_options=self.redis_options)


def backend_throughput(target: Target, frame: Frame, count: int, batch: int) -> float:
    """Seconds from the first publish to the last ack of ``count`` frames."""
    producer, consumer = target.open(), target.open()
    consumer.ensure_group(GROUP)

    def publish() -> None:
        for start in range(0, count, batch):
            seqs = range(start, min(start + batch, count))
            camera = f"cam{start // batch % CAMERAS}"
            producer.publish_many([Frame(camera, seq, frame.data) for seq in seqs])

    started = time.perf_counter()
    thread = threading.Thread(target=publish)
    thread.start()
    done = 0
    while done < count:
        deliveries = consumer.consume(GROUP, "c0", count=batch, block_ms=1000)
        consumer.ack(deliveries)
        done += len(deliveries)
    elapsed = time.perf_counter() - started
    thread.join()
    producer.close()
    consumer.close()
    return elapsed


def backend_latency(target: Target, frame: Frame, rate: float, seconds: float) -> tuple[list[float], list[float]]:
    """End-to-end milliseconds of frames published one by one at ``rate`` by a producer process, and how long
    each ``publish()`` call took there (milliseconds, in publish order).

    The two differ with ``replica_acks``: a consumer sees an entry once the master has it, the publisher returns
    once ``WAIT`` says a replica has it too; that wait is what the publish times show."""
    consumer = target.open()
    consumer.ensure_group(GROUP)
    count = int(rate * seconds)
    timings = multiprocessing.get_context("spawn").Queue()
    producer = start_producer(_publish_paced, target, bytes(frame.data), rate, count, timings)
    samples: list[float] = []
    while len(samples) < count:
        deliveries = consumer.consume(GROUP, "c0", count=64, block_ms=1000)
        now = time.time_ns()
        if not deliveries:
            producer_gone(producer, len(samples), count)
        samples.extend((now - d.frame.ts_ns) / 1e6 for d in deliveries)
        consumer.ack(deliveries)
    publish_ms: list[float] = timings.get(timeout=60)  # sent before the producer ends: read before joining
    producer.join()
    consumer.close()
    return samples, publish_ms


def _publish_paced(target: Target, data: bytes, rate: float, count: int, timings: Any) -> None:
    """The producer process of :func:`backend_latency`: one ``publish()`` per frame, paced, each one timed."""
    queue = target.open()
    took: list[float] = []

    def publish(seq: int, due_ns: int) -> None:
        started = time.perf_counter()
        queue.publish(Frame("bench", seq, data, due_ns))
        took.append((time.perf_counter() - started) * 1e3)

    pace(rate, count, publish)
    queue.close()
    timings.put(took)


def codec_timings() -> dict[str, float]:
    """Microseconds for encode + decode of one Full HD frame, by checksum, uncompressed."""
    frame = Frame("bench", 0, test_pattern((1080, 1920, 3), 1))
    result = {}
    for checksum in ("none", "xxh3"):
        codec = FrameCodec(checksum=checksum)
        best = float("inf")
        for _ in range(200):
            started = time.perf_counter()
            encoded = codec.encode(frame)
            codec.decode(encoded.header, encoded.payload)
            best = min(best, time.perf_counter() - started)
        result[f"fullhd_encode_decode_us_{checksum}"] = round(best * 1e6, 2)
    return result
