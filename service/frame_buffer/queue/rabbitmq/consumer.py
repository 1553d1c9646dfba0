"""Consuming: one ``basic.consume`` per group on a channel of its own, acks, nacks, and consumer names.

``attempts`` is ``1 + x-delivery-count`` (quorum; ``redelivered`` on classic queues) plus the attempts carried
in ``x-fb-attempts`` by a delayed nack's republish. AMQP keeps a delivery with its channel, not with a consumer
name: frames come back to the group when the consumer's connection closes (process death, heartbeat timeout),
not after ``claim_min_idle_ms``; within a process, a consumer name is taken over from an older instance.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from frame_buffer import metrics
from frame_buffer.queue.base import Delivery, QueueSettings, RawEntry
from frame_buffer.queue.rabbitmq import pika_compat
from frame_buffer.queue.rabbitmq.connection import Link, Tuning
from frame_buffer.queue.rabbitmq.messages import ATTEMPTS, HEADER, count, persistent, show
from frame_buffer.queue.rabbitmq.publisher import Publisher
from frame_buffer.queue.rabbitmq.topology import Topology

#: (broker, stream, group, consumer name) -> the consumer of this process consuming under that name.
_consumers: dict[tuple[str, str, str, str], weakref.ref[Consumer]] = {}
_consumers_lock = threading.Lock()
#: Writes an entry to the dead-letter queue with (group, entry, reason, error); the caller acks it.
DeadLetterWriter = Callable[[str, RawEntry, str, str], None]


@dataclass(eq=False)
class Subscription:
    """One ``basic.consume`` on a channel of its own: deliveries not yet handed out, and those handed out."""

    channel: Any
    prefetch: int
    fresh: bool = True
    buffer: deque[tuple[Any, Any, bytes]] = field(default_factory=deque)
    handed: dict[int, float] = field(default_factory=dict)

    @property
    def unacked(self) -> int:
        return len(self.buffer) + len(self.handed)


@dataclass(frozen=True, slots=True)
class _Token:
    """What an ack needs: the subscription (its channel) and the delivery tag on it."""

    sub: Subscription
    tag: int


def _raw(sub: Subscription, method: Any, props: Any, body: bytes) -> tuple[RawEntry, str | None]:
    """The entry a delivery carries, and what is wrong with its AMQP header ``h`` if it is not bytes.

    Anyone who can publish to the exchange sets these headers: ``x-fb-attempts`` and ``x-delivery-count``
    count only as ints in [0, 2**31) and ``h`` only as a byte array or long string (which pika decodes to
    ``str`` when it is UTF-8, so it is encoded back: the bytes are the ones sent).
    """
    headers = props.headers if isinstance(props.headers, dict) else {}
    returns = count(headers.get("x-delivery-count")) or int(method.redelivered)
    attempts = count(headers.get(ATTEMPTS)) + returns + 1
    entry_id = props.message_id if isinstance(props.message_id, str) and props.message_id else None
    header, problem = headers.get(HEADER), None
    if isinstance(header, str):
        header = header.encode()
    elif header is not None and not isinstance(header, bytes):
        header, problem = None, f"AMQP header h is {show(header)}, not a byte array or long string"
    token = _Token(sub, method.delivery_tag)
    return RawEntry(entry_id or f"tag-{method.delivery_tag}", header, body, attempts, token), problem


class Consumer:
    """The subscriptions of one backend instance, and what it does with the deliveries they bring."""

    def __init__(self, settings: QueueSettings, link: Link, tuning: Tuning, *, topology: Topology,
                 publisher: Publisher, write_dead_letter: DeadLetterWriter) -> None:
        self._settings = settings
        self._link = link
        self._tuning = tuning
        self._topology = topology
        self._publisher = publisher
        self._write_dead_letter = write_dead_letter
        self.subs: dict[str, Subscription] = {}
        self._registered: set[tuple[str, str, str, str]] = set()

    def reset(self) -> None:
        """Forget the subscriptions: their channels went with the connection, their deliveries back."""
        self.subs.clear()

    def _subscription(self, group: str, count: int) -> Subscription:
        if group in self.subs:
            return self.subs[group]
        channel = self._link.channel()
        sub = Subscription(channel, max(count, self._tuning.prefetch))
        channel.basic_qos(prefetch_count=sub.prefetch)

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            sub.buffer.append((method, props, body))
            self._link.end_wait()

        pika_compat.consume(channel, self._topology.group_queue(group), on_message)
        self.subs[group] = sub
        return sub

    def take_over(self, group: str, consumer: str) -> None:
        """A consumer name is one consumer: an older instance of this process consuming under the same name
        (a restart within the process) gives its deliveries back, so this one receives them again."""
        key = (self._link.address, self._topology.exchange, group, consumer)
        if key in self._registered:
            return
        self._registered.add(key)
        with _consumers_lock:
            ref = _consumers.get(key)
            _consumers[key] = weakref.ref(self)
        old = ref() if ref is not None else None
        if old is not None and old is not self:
            old._release(group)

    def _release(self, group: str) -> None:
        def close() -> None:
            sub = self.subs.pop(group, None)
            if sub is not None:
                sub.channel.close()

        self._link.call(close)

    def fetch(self, group: str, count: int, deadline: float) -> list[RawEntry]:
        """Up to ``count`` entries of ``group``, waiting until ``deadline`` for the first; deliveries whose
        header ``h`` is not bytes are dead-lettered (``bad_header``). Runs inside :meth:`Link.call`."""
        sub = self._subscription(group, count)
        self._link.pump(0)
        entries: list[RawEntry] = []
        while True:
            while not sub.buffer and time.monotonic() < deadline:
                self._link.pump(deadline - time.monotonic())
            if sub.fresh and len(sub.buffer) < count:
                # A new subscription gets a burst of what the queue holds, and the rest of it may still be
                # on the wire: a round trip on this channel brings it in, so one call returns what the queue
                # had ready (as XREADGROUP does). Later deliveries arrive as frames are published.
                sub.channel.basic_qos(prefetch_count=sub.prefetch)
            sub.fresh = False
            now = time.monotonic()
            while sub.buffer and len(entries) < count:
                method, props, body = sub.buffer.popleft()
                sub.handed[method.delivery_tag] = now
                entry, problem = _raw(sub, method, props, body)
                if problem is None:
                    entries.append(entry)
                    continue
                self.dead_letter(group, entry, "bad_header", problem)
                metrics.dead_lettered.labels(reason="bad_header").inc()
            if entries or time.monotonic() >= deadline:  # else all were dead-lettered: wait on
                return entries

    @staticmethod
    def _live(token: _Token) -> bool:
        """Whether the delivery can still be acked: its channel is the current one (else it was requeued)."""
        return token.sub.channel.is_open and token.tag in token.sub.handed

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """``basic.ack`` the deliveries; one ``multiple`` ack when they are all this channel has handed out."""
        by_sub: dict[Subscription, list[int]] = {}
        for delivery in deliveries:
            token: _Token = delivery.raw.token
            if self._live(token):
                by_sub.setdefault(token.sub, []).append(token.tag)
        if not by_sub:
            return

        def ack_all() -> None:
            for sub, tags in by_sub.items():
                for tag in tags:
                    del sub.handed[tag]
                last = max(tags)
                if all(tag > last for tag in sub.handed):
                    pika_compat.ack(sub.channel, last, multiple=True)
                else:
                    for tag in tags:
                        pika_compat.ack(sub.channel, tag)
            self._link.pump(0)

        self._link.call(ack_all)

    def nack(self, delivery: Delivery, delay_s: float) -> None:
        """Give a delivery back. Without a delay a quorum queue requeues it (counting the delivery); with one,
        or on a classic queue, it is republished (to a delay queue) carrying its attempts, then acked."""
        token: _Token = delivery.raw.token
        if not self._live(token):
            return  # its channel is gone: the broker has requeued it already

        def give_back() -> None:
            if delay_s <= 0 and self._tuning.queue_type == "quorum":
                del token.sub.handed[token.tag]
                pika_compat.requeue(token.sub.channel, token.tag)
                self._link.pump(0)
                return
            target = self._topology.group_queue(delivery.group)
            if delay_s > 0:
                target = self._topology.delay_queue(delivery.group, delay_s)
            raw = delivery.raw
            props = persistent(raw.id, {HEADER: raw.header, ATTEMPTS: raw.attempts})
            self._publisher.publish_all([("", target, raw.payload, props)],
                                        time.monotonic() + self._settings.publish_timeout_s)
            self._ack_token(token)

        self._link.call(give_back)

    def _ack_token(self, token: _Token) -> None:
        del token.sub.handed[token.tag]
        pika_compat.ack(token.sub.channel, token.tag)
        self._link.pump(0)

    def dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """Write the entry to the dead-letter queue (confirmed), then ack it in the group if it still can be."""
        token: _Token = entry.token

        def move() -> None:
            self._write_dead_letter(group, entry, reason, error)
            if self._live(token):
                self._ack_token(token)

        self._link.call(move)
