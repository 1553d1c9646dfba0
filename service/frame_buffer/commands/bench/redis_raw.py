"""Raw redis-py baseline for ``frame-buffer bench``: what the redis backend is measured against.

The same server-side work as the backend without this project's code: pipelined XADD of a header field and
the payload, XREADGROUP and XACK on a consumer connection of its own. No codec, no backpressure checks.

Against a Redis Cluster it is redis-py's ``RedisCluster`` (its own parser, its own routing) on one stream key,
so one master: what a user of the plain client gets from a cluster without sharding their stream.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from redis.cluster import RedisCluster

from frame_buffer.commands.bench.harness import GROUP, pace, producer_gone, start_producer


def _client(url: str, cluster: bool, **kwargs: Any) -> Any:
    """redis-py's client of one server, or of a cluster from its first seed."""
    if cluster:
        return RedisCluster.from_url(url.split(",", maxsplit=1)[0], **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def throughput(url: str, stream: str, payload: bytes | memoryview, count: int, batch: int, *,
               cluster: bool = False) -> float:
    """The same work as :func:`.harness.backend_throughput` with plain redis-py and no codec."""
    producer, consumer = _client(url, cluster), _client(url, cluster, socket_timeout=10)
    consumer.xgroup_create(stream, GROUP, id="0", mkstream=True)
    header = b"0" * 64

    def publish() -> None:
        for start in range(0, count, batch):
            pipe = producer.pipeline(transaction=False)
            for _ in range(start, min(start + batch, count)):
                pipe.xadd(stream, {b"h": header, b"p": payload})
            pipe.execute()

    started = time.perf_counter()
    thread = threading.Thread(target=publish)
    thread.start()
    done = 0
    while done < count:
        reply: Any = consumer.xreadgroup(GROUP, "c0", {stream: ">"}, count=batch, block=1000)
        if reply:
            ids = [entry_id for entry_id, _ in reply[0][1]]
            consumer.xack(stream, GROUP, *ids)
            done += len(ids)
    elapsed = time.perf_counter() - started
    thread.join()
    producer.delete(stream)
    producer.close()
    consumer.close()
    return elapsed


def latency(url: str, stream: str, payload: bytes | memoryview, rate: float, seconds: float, *,
            cluster: bool = False) -> list[float]:
    """End-to-end milliseconds with plain redis-py at a paced rate, the producer in a process of its own."""
    consumer = _client(url, cluster, socket_timeout=10)
    consumer.xgroup_create(stream, GROUP, id="0", mkstream=True)
    count = int(rate * seconds)
    producer = start_producer(_publish_paced, url, stream, bytes(payload), rate, count, cluster=cluster)
    samples: list[float] = []
    while len(samples) < count:
        reply: Any = consumer.xreadgroup(GROUP, "c0", {stream: ">"}, count=64, block=1000)
        now = time.time_ns()
        if not reply:
            producer_gone(producer, len(samples), count)
            continue
        entries = reply[0][1]
        samples.extend((now - int(fields[b"h"])) / 1e6 for _, fields in entries)
        consumer.xack(stream, GROUP, *[entry_id for entry_id, _ in entries])
    producer.join()
    consumer.delete(stream)
    consumer.close()
    return samples


def _publish_paced(url: str, stream: str, payload: bytes, rate: float, count: int, *, cluster: bool) -> None:
    """The producer process of :func:`latency`: one XADD per frame, its due time in the header."""
    producer = _client(url, cluster)
    pace(rate, count, lambda _seq, due_ns: producer.xadd(stream, {b"h": str(due_ns).encode(), b"p": payload}))
    producer.close()
