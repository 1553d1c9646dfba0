"""The exchanges and queues of one stream: their names, their arguments, and declaring them.

Queues are looked up before they are declared, so that a queue created with another ``max_lag`` is used as it
is rather than refused (PRECONDITION_FAILED); the admin channel is reopened after a lookup that found nothing,
since the broker closes a channel on a failed passive declare.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pika
import pika.exceptions

from frame_buffer.queue.base import QueueSettings
from frame_buffer.queue.rabbitmq.connection import Link, Tuning
from frame_buffer.queue.rabbitmq.publisher import Publisher

#: Delays of :meth:`RabbitMQQueue.nack` are rounded up to one of these (ms): one delay queue per step.
DELAY_STEPS_MS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000)
_NOT_FOUND = 404


def delay_step_ms(delay_s: float) -> int:
    """The delay queue a nack with ``delay_s`` goes to: the smallest step that is not shorter."""
    wanted = delay_s * 1000
    return next((step for step in DELAY_STEPS_MS if step >= wanted), DELAY_STEPS_MS[-1])


def topology(settings: QueueSettings, groups: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Exchanges and queues of a stream (with ``groups``' queues and their delay queues), for cleanup."""
    stream = settings.stream
    queues = [f"{stream}:unrouted", settings.dead_letter_stream]
    for group in groups:
        queues.append(f"{stream}.{group}")
        queues += [f"{stream}.{group}.retry.{step}" for step in DELAY_STEPS_MS]
    return [stream, f"{stream}:unrouted"], queues


def delete_topology(url: str, settings: QueueSettings, groups: Iterable[str] = ()) -> None:
    """Delete what :func:`topology` names (missing ones are fine): for tests and the bench."""
    exchanges, queues = topology(settings, groups)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)
    finally:
        connection.close()


class Topology:
    """One stream's exchanges and queues on the broker, declared on each connection and for each group."""

    def __init__(self, settings: QueueSettings, link: Link, tuning: Tuning, publisher: Publisher) -> None:
        self._settings = settings
        self._link = link
        self._tuning = tuning
        self._publisher = publisher
        self.exchange = settings.stream
        self.unrouted = f"{settings.stream}:unrouted"
        self.dlq = settings.dead_letter_stream
        self.admin: Any = None
        self.groups: set[str] = set()
        self._delay_queues: set[str] = set()

    def group_queue(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def reset(self) -> None:
        """Forget what was declared on the connection that is gone."""
        self.admin = None
        self.groups.clear()
        self._delay_queues.clear()

    def queue_args(self, dead_letter_to: str | None) -> dict[str, Any]:
        # The broker's limit is a backstop above max_lag, which publish itself holds to: a quorum queue that
        # reaches its limit nacks publishes until it is back under 80 % of it, so a limit at max_lag would
        # nack batches the producer had room for, and a batch half confirmed and half nacked is one that
        # publish can neither report as written nor as not written.
        args: dict[str, Any] = {
            "x-queue-type": self._tuning.queue_type,
            "x-max-length": self._settings.max_lag + self._tuning.confirm_window,
            "x-overflow": "reject-publish",
        }
        if dead_letter_to is not None:
            args["x-dead-letter-exchange"] = ""
            args["x-dead-letter-routing-key"] = dead_letter_to
            if self._tuning.queue_type == "quorum":
                args["x-dead-letter-strategy"] = "at-least-once"
        return args

    def declare_all(self) -> None:
        """On a new connection: the admin channel, the exchanges and the fixed queues, the configured groups."""
        self.admin = self._link.conn.channel()
        self.admin.exchange_declare(self.unrouted, "fanout", durable=True)
        self.declare(self.unrouted, self.queue_args(None))
        self.admin.queue_bind(self.unrouted, self.unrouted)
        self.admin.queue_declare(self.dlq, durable=True, arguments={"x-queue-type": "classic"})
        self.admin.exchange_declare(self.exchange, "topic", durable=True,
                                    arguments={"alternate-exchange": self.unrouted})
        for group in self._settings.groups:
            self._declare_group(group)

    def declare(self, name: str, arguments: dict[str, Any]) -> bool:
        """Declare a durable queue; False when it already existed (with whatever arguments it was given)."""
        if self.counts(name) is not None:
            return False
        # Declared meanwhile by another client with other arguments: PRECONDITION_FAILED, reported as refused;
        # the next call finds the queue and uses it as it is.
        self.admin.queue_declare(name, durable=True, arguments=arguments)
        return True

    def counts(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, None when it does not exist."""
        self._link.connection()
        try:
            ok = self.admin.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            self.admin = self._link.conn.channel()
            return None
        return int(ok.method.message_count), int(ok.method.consumer_count)

    def ensure_group(self, group: str) -> None:
        """Declare the group's queue and bind it; a new queue takes over the frames held in ``S:unrouted``."""

        def declare() -> None:
            self._link.connection()  # a new connection declares the configured groups
            if group not in self.groups:
                self._declare_group(group)

        if group not in self.groups or self._link.conn is None:
            self._link.call(declare)

    def _declare_group(self, group: str) -> None:
        name = self.group_queue(group)
        args = self.queue_args(self.dlq)
        if self._tuning.queue_type == "quorum":
            args["x-delivery-limit"] = self._settings.max_deliveries + 1
        created = self.declare(name, args)
        self.admin.queue_bind(name, self.exchange, routing_key="frames.#")
        if created:
            self._adopt_unrouted(name)
        self.groups.add(group)

    def delay_queue(self, group: str, delay_s: float) -> str:
        """The queue a nack with ``delay_s`` goes to (message TTL, dead-lettered back to the group's queue)."""
        group_queue = self.group_queue(group)
        step = delay_step_ms(delay_s)
        target = f"{group_queue}.retry.{step}"
        if target not in self._delay_queues:
            args = self.queue_args(group_queue)
            args["x-message-ttl"] = step
            self.declare(target, args)
            self._delay_queues.add(target)
        return target

    def _adopt_unrouted(self, queue: str) -> None:
        """Move the frames held while no group existed into ``queue``, in order, confirmed before acked."""
        with self._link.temp_channel() as channel:
            while True:
                taken = []
                for _ in range(self._tuning.confirm_window):
                    method, props, body = channel.basic_get(self.unrouted)
                    if method is None:
                        break
                    taken.append((method, props, body))
                if not taken:
                    return
                self._publisher.publish_all([("", queue, body, props) for _m, props, body in taken],
                                            time.monotonic() + self._settings.publish_timeout_s)
                channel.basic_ack(taken[-1][0].delivery_tag, multiple=True)
