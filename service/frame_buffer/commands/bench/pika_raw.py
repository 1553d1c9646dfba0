"""Raw pika baseline for ``frame-buffer bench``: what the rabbitmq backend is measured against.

The same broker-side work as the backend without this project's code: a durable topic exchange and one
durable quorum queue bound to it with ``x-max-length`` / ``reject-publish`` (as the backend declares them),
persistent messages published with ``mandatory`` and confirms, ``window`` messages in flight (never waiting
for each one), and a consumer on its own connection (in a thread for throughput, beside a publisher process for
latency), with a prefetch and manual acks. No codec, no header, no backpressure checks, pika's defaults
everywhere.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
from typing import Any

import pika
from pika import spec

from frame_buffer.commands.bench.harness import pace, producer_gone, start_producer
from frame_buffer.queue.rabbitmq import pika_compat

PREFETCH = 64


def _connect(url: str) -> Any:
    return pika.BlockingConnection(pika.URLParameters(url))


def _wake(connection: Any) -> None:
    pika_compat.end_wait(connection)  # end process_data_events' wait now, as pika does itself


def _unroutable(_channel: Any, _method: Any, _properties: Any, _body: bytes) -> None:
    raise RuntimeError("the broker returned a baseline publish: no queue is bound to frames.raw")


def _closed(_channel: Any, _reason: Exception) -> None:
    """Nothing to do: closing is how every run ends, and a publish on a closed channel raises anyway."""


class _Publisher:
    """Publishes to the default exchange with confirms, at most ``window`` unconfirmed."""

    def __init__(self, url: str, exchange: str, window: int) -> None:
        self.connection = _connect(url)
        self.channel = self.connection.channel()
        self.exchange, self.window = exchange, window
        self.sent = self.confirmed = 0
        selected: list[Any] = []
        pika_compat.enable_confirms(self.channel, self._on_confirm, on_return=_unroutable, on_close=_closed,
                                    on_selected=selected.append)
        while not selected:
            self.connection.process_data_events(0.01)

    def _on_confirm(self, frame: Any) -> None:
        if isinstance(frame.method, spec.Basic.Nack):
            raise RuntimeError("the broker nacked a baseline publish")
        self.confirmed = frame.method.delivery_tag if frame.method.multiple else self.confirmed + 1
        _wake(self.connection)

    def publish(self, body: bytes) -> None:
        while self.sent - self.confirmed >= self.window:
            self.connection.process_data_events(1.0)
        pika_compat.publish(self.channel, self.exchange, "frames.raw", pika.BasicProperties(delivery_mode=2), body)
        self.sent += 1
        self.connection.process_data_events(0)

    def drain(self) -> None:
        while self.confirmed < self.sent:
            self.connection.process_data_events(1.0)

    def close(self) -> None:
        self.connection.close()


class _Consumer(threading.Thread):
    """Consumes ``count`` messages on its own connection, acking each; records receive times and bodies."""

    def __init__(self, url: str, queue: str, count: int, keep: bool = False) -> None:
        super().__init__(daemon=True)
        self.connection = _connect(url)
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=PREFETCH)
        self.queue, self.count, self.keep = queue, count, keep
        self.received = 0
        self.samples: list[float] = []
        self.finished_at = 0.0
        pika_compat.consume(self.channel, queue, self._on_message)

    def _on_message(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        if self.keep:
            sent_ns = struct.unpack_from(">q", body)[0]
            self.samples.append((time.time_ns() - sent_ns) / 1e6)
        channel.basic_ack(method.delivery_tag)
        self.received += 1
        _wake(self.connection)

    def run(self) -> None:
        while self.received < self.count:
            self.connection.process_data_events(1.0)
        self.finished_at = time.perf_counter()
        self.connection.close()


def _with_queue(url: str) -> str:
    """A topic exchange and a queue bound to it, both named like the returned name."""
    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    connection = _connect(url)
    channel = connection.channel()
    channel.exchange_declare(name, "topic", durable=True)
    channel.queue_declare(name, durable=True, arguments={
        "x-queue-type": "quorum", "x-max-length": 1_000_000, "x-overflow": "reject-publish"})
    channel.queue_bind(name, name, routing_key="frames.#")
    connection.close()
    return name


def _delete(url: str, name: str) -> None:
    connection = _connect(url)
    channel = connection.channel()
    channel.queue_delete(name)
    channel.exchange_delete(name)
    connection.close()


def throughput(url: str, payload: bytes, count: int, window: int = 256) -> float:
    """Seconds from the first publish to the last consumer ack of ``count`` persistent messages."""
    queue = _with_queue(url)
    try:
        consumer = _Consumer(url, queue, count)
        publisher = _Publisher(url, queue, window)
        started = time.perf_counter()
        consumer.start()
        for _ in range(count):
            publisher.publish(payload)
        publisher.drain()
        consumer.join()
        publisher.close()
        return consumer.finished_at - started
    finally:
        _delete(url, queue)


def latency(url: str, payload: bytes, rate: float, seconds: float, window: int = 256) -> list[float]:
    """End-to-end milliseconds (publish call to consumer receipt) of messages published at ``rate``/s.

    The publisher runs in a process of its own, as the backend's producer does in ``frame-buffer bench``.
    """
    queue = _with_queue(url)
    count = int(rate * seconds)
    try:
        consumer = _Consumer(url, queue, count, keep=True)
        publisher = start_producer(_publish_paced, url, queue, window, payload, rate=rate, count=count)
        while consumer.received < count:
            before = consumer.received
            consumer.connection.process_data_events(1.0)
            if consumer.received == before:
                producer_gone(publisher, before, count)
        consumer.connection.close()
        publisher.join()
        return consumer.samples
    finally:
        _delete(url, queue)


def _publish_paced(url: str, queue: str, window: int, payload: bytes, *, rate: float, count: int) -> None:
    """The publisher process of :func:`latency`: the due time in the body's first 8 bytes."""
    body = bytearray(payload)
    publisher = _Publisher(url, queue, window)

    def publish(_seq: int, due_ns: int) -> None:
        struct.pack_into(">q", body, 0, due_ns)
        publisher.publish(bytes(body))

    pace(rate, count, publish, sleep=publisher.connection.sleep)
    publisher.drain()
    publisher.close()
