"""RabbitMQ backend: a durable topic exchange per stream, a durable queue per consumer group.

Topology for ``settings.stream = S`` (docs/backend-comparison.md has the why of each choice):

* exchange ``S`` (topic, durable), routing key ``frames.<camera>``; its alternate exchange ``S:unrouted``
  (fanout) feeds the queue ``S:unrouted``, which holds frames published while no group queue is bound.
  The first group created takes them over, as a Redis group created at id 0 takes the stream's entries.
* group ``G`` is the queue ``S.G`` bound with ``frames.#``: a quorum queue by default (classic by option),
  ``x-max-length = max_lag + confirm_window`` with ``x-overflow = reject-publish`` (a full queue nacks the
  publish: backpressure, never a drop; publish itself holds the backlog to ``max_lag``, the broker's limit
  is the backstop for producers that do not know a group), dead-lettering to ``S:dlq`` and, on quorum
  queues, ``x-delivery-limit = max_deliveries + 1`` as a backstop only: :meth:`FrameQueue.consume`
  dead-letters past ``max_deliveries`` itself, with the reason.
* ``S.G.retry.<ms>``: delay queues for :meth:`nack` with a delay (message TTL, dead-lettered back to ``S.G``).
* ``S:dlq``: a classic durable queue, listed by ``basic.get`` without ack and requeued (classic queues put
  requeued messages back in place, so the listing order is stable).

Messages are persistent, published with ``mandatory`` and publisher confirms, up to ``confirm_window`` in
flight; ``publish_many`` returns once every frame of the batch is confirmed. The codec header travels in the
AMQP headers (``h``) and the payload is the body, passed to pika as the codec's buffer: pika still copies it
once per AMQP body frame (``frame_max``, 128 KiB) while framing, as it does for any publisher.

Consumers subscribe with ``basic.consume`` and a prefetch; ``attempts`` is ``1 + x-delivery-count`` (quorum;
``redelivered`` on classic queues) plus the attempts carried in ``x-fb-attempts`` by a delayed nack's
republish. AMQP keeps a delivery with its channel, not with a consumer name: frames come back to the group
when the consumer's connection closes (process death, heartbeat timeout), not after ``claim_min_idle_ms``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeGuard, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
from pika import spec

from frame_buffer import metrics
from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import (
    BackendRefused,
    BackendUnavailable,
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueError,
    QueueSettings,
    QueueStats,
    RawEntry,
)

T = TypeVar("T")
QueueType = Literal["quorum", "classic"]
HEADER = "h"
ATTEMPTS = "x-fb-attempts"
#: Delays of :meth:`RabbitMQQueue.nack` are rounded up to one of these (ms): one delay queue per step.
DELAY_STEPS_MS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000)
_NOT_FOUND = 404
_ACCESS_REFUSED = 403
_MAX_COUNT = 2**31
#: What pika raises when the broker closes the connection while it is being opened: credentials or vhost refused.
_LOGIN_REFUSED = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError,
                  pika.exceptions.ProbableAccessDeniedError)
_RECV_BYTES = 256 * 1024
_FLUSH_BYTES = 1024 * 1024
_instance_ids = itertools.count(1)
#: (broker, stream, group, consumer name) -> the instance of this process consuming under that name.
_consumers: dict[tuple[str, str, str, str], weakref.ref[RabbitMQQueue]] = {}
_consumers_lock = threading.Lock()


def _count(value: object) -> int:
    """A count from a message's headers, which whoever published it set: an int in [0, 2**31), else 0."""
    return value if _is_int(value) and 0 <= value < _MAX_COUNT else 0


def _is_int(value: object) -> TypeGuard[int]:
    """An int and not a bool. isinstance, not type(): pika decodes a 64-bit field (the broker's
    x-delivery-count, a timestamp) to an int subclass of its own."""
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    """A header value for a message: its type and its repr, bounded."""
    text = repr(value)
    return f"a {type(value).__name__} ({text[:57] + '...' if len(text) > 60 else text})"


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: fit for a message or a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _is_refusal(exc: BaseException) -> bool:
    """Whether the broker refused us (credentials, vhost, a permission) rather than failed."""
    if isinstance(exc, _LOGIN_REFUSED):
        return True
    closed = (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker)
    return isinstance(exc, closed) and exc.reply_code == _ACCESS_REFUSED


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


@dataclass(eq=False)
class _Subscription:
    """One ``basic.consume`` on a channel of its own: deliveries not yet handed out, and those handed out."""

    channel: Any
    prefetch: int
    fresh: bool = True
    buffer: deque[tuple[Any, Any, bytes]] = field(default_factory=deque)
    handed: dict[int, float] = field(default_factory=dict)

    @property
    def unacked(self) -> int:
        return len(self.buffer) + len(self.handed)


@dataclass(eq=False)
class _Scan:
    """A reading of the dead-letter queue: its channel, the messages taken and not acked, and how many the
    queue still held after the last one taken."""

    channel: Any
    held: int = 0
    remaining: int = 0

    def ack(self, method: Any) -> None:
        self.channel.basic_ack(method.delivery_tag)
        self.held -= 1


@dataclass(frozen=True, slots=True)
class _Token:
    """What an ack needs: the subscription (its channel) and the delivery tag on it."""

    sub: _Subscription
    tag: int


class RabbitMQQueue(FrameQueue):
    """:class:`FrameQueue` on a RabbitMQ broker (see the module docstring for the topology).

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        settings: stream name, groups, limits (see :class:`QueueSettings`).
        codec: the wire codec.
        queue_type: ``quorum`` (replicated, delivery counting) or ``classic`` (one node, lighter).
        prefetch: deliveries a consumer holds unacked at most (at least the ``count`` it asks for); capped at
            a quarter of ``max_lag`` so that consumers' holdings leave room in the backlog bound.
        confirm_window: published messages awaiting their confirm at most.
        confirm_timeout_s: how long a publish waits for the broker's confirms before it reports an outage.
        poll_s: how often publish re-checks the backlog while it waits under backpressure.
        heartbeat_s: AMQP heartbeat; a silent peer is declared dead after two.
        backoff_s: first and longest wait between reconnection attempts after a failed one.
    """

    backend = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/%2F",
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        *,
        queue_type: QueueType = "quorum",
        prefetch: int = 64,
        confirm_window: int = 256,
        confirm_timeout_s: float = 10.0,
        poll_s: float = 0.01,
        heartbeat_s: int = 60,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        super().__init__(settings, codec)
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type: must be 'quorum' or 'classic', got {queue_type!r}")
        self.url = url
        self.display_url = masked_url(url)
        self.params = pika.URLParameters(url)
        self.params.heartbeat = heartbeat_s
        self.params.connection_attempts = 1
        self.params.blocked_connection_timeout = max(self.settings.publish_timeout_s, 1.0)
        self.address = f"{self.params.host}:{self.params.port}"
        self.queue_type: QueueType = queue_type
        self.prefetch = max(1, min(prefetch, self.settings.max_lag // 4))
        self.confirm_window = confirm_window
        self.confirm_timeout_s = confirm_timeout_s
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        stream = self.settings.stream
        self._exchange, self._unrouted, self._dlq = stream, f"{stream}:unrouted", self.settings.dead_letter_stream
        self._id_prefix = f"{os.getpid():x}.{next(_instance_ids):x}"
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._admin: Any = None
        self._pub: Any = None
        self._pub_error: Exception | None = None
        self._subs: dict[str, _Subscription] = {}
        self._groups: set[str] = set()
        self._delay_queues: set[str] = set()
        self._registered: set[tuple[str, str, str, str]] = set()
        self._unconfirmed: dict[int, int] = {}
        self._nacked: list[int] = []
        self._returned: set[str] = set()
        self._published = 0
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._refusal: str | None = None  # why the last connection attempt was refused, if it was
        self._last_io = 0.0
        with contextlib.suppress(BackendUnavailable):  # an outage now is reported by the first operation
            self._call(self._connection)

    # -- connection -------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """Run broker I/O under the instance lock; connection failures become :class:`BackendUnavailable`."""
        with self._lock:
            try:
                result = fn()
            except (pika.exceptions.AMQPError, OSError) as exc:
                # A channel error (a queue deleted under us, arguments that differ) is the broker refusing,
                # not an outage; either way start over on a fresh connection: deliveries go back to the queue.
                refused = isinstance(exc, pika.exceptions.AMQPChannelError) and bool(self._conn and self._conn.is_open)
                self._disconnect()
                if _is_refusal(exc):
                    raise self._refused(exc) from exc
                if refused:
                    raise QueueError(f"rabbitmq at {self.address} refused: {exc!r}") from exc
                raise BackendUnavailable(f"rabbitmq at {self.address} unavailable: {exc!r}") from exc
            self._last_io = time.monotonic()
            return result

    def _refused(self, exc: BaseException) -> BackendRefused:
        return BackendRefused(f"rabbitmq at {self.address} refused {self.display_url}: {exc} "
                              "(check the user, password, vhost and permissions)")

    def _connection(self) -> Any:
        """The open connection, opening one (with exponential backoff after a failure) when needed."""
        if self._conn is not None and time.monotonic() - self._last_io > self.params.heartbeat:
            try:  # idle past a heartbeat: find out now whether the broker dropped us, and reconnect if so
                self._conn.process_data_events(0)
            except (pika.exceptions.AMQPError, OSError):
                self._disconnect()
        if self._conn is not None:
            return self._conn
        now = time.monotonic()
        if now < self._next_attempt:
            if self._refusal is not None:  # still the broker's answer until the next attempt asks again
                raise BackendRefused(self._refusal)
            raise BackendUnavailable(
                f"rabbitmq at {self.address} unavailable: next reconnection attempt in {self._next_attempt - now:.2f}s"
            )
        try:
            conn = pika.BlockingConnection(self.params)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._backoff = min(self.backoff_s[1], max(self.backoff_s[0], self._backoff * 2))
            self._next_attempt = now + self._backoff
            self._refusal = str(self._refused(exc)) if _is_refusal(exc) else None
            raise
        # pika reads the socket 4 KiB at a time and appends each read to a bytes buffer, which copies a 6 MB
        # frame hundreds of times; reading up to 256 KiB at a time makes that a handful (an instance override
        # of the transport's class constant: without it, pika just reads as before).
        conn._impl._transport._MAX_RECV_BYTES = _RECV_BYTES
        self._backoff, self._conn = 0.0, conn
        self._admin = conn.channel()
        self._declare_topology()
        for group in self.settings.groups:
            self._declare_group(group)
        return conn

    def _disconnect(self) -> None:
        """Forget the connection and everything on it; unacked deliveries go back to their queues."""
        conn, self._conn = self._conn, None
        self._admin = self._pub = None
        self._subs.clear()
        self._unconfirmed.clear()
        self._groups.clear()
        self._delay_queues.clear()
        if conn is not None and conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):  # broken already: nothing to release
                conn.close()

    def _wake(self, *_args: Any) -> None:
        """Make a pending ``process_data_events`` return now (pika's own way of ending its wait)."""
        self._conn._request_channel_dispatch(-1)

    def _pump(self, timeout: float) -> None:
        """Send what is queued and handle what arrived, waiting up to ``timeout`` for something to arrive."""
        self._conn.process_data_events(time_limit=max(0.0, timeout))

    @contextmanager
    def _temp_channel(self) -> Iterator[Any]:
        """A channel for one operation: closing it gives back whatever it took and did not ack."""
        channel = self._connection().channel()
        try:
            yield channel
        finally:
            if channel.is_open:
                channel.close()

    # -- topology ---------------------------------------------------------------------------------------
    def _queue_args(self, dead_letter_to: str | None) -> dict[str, Any]:
        # The broker's limit is a backstop above max_lag, which publish itself holds to: a quorum queue that
        # reaches its limit nacks publishes until it is back under 80 % of it, so a limit at max_lag would
        # nack batches the producer had room for, and a batch half confirmed and half nacked is one that
        # publish can neither report as written nor as not written.
        args: dict[str, Any] = {
            "x-queue-type": self.queue_type, "x-max-length": self.settings.max_lag + self.confirm_window,
            "x-overflow": "reject-publish",
        }
        if dead_letter_to is not None:
            args["x-dead-letter-exchange"] = ""
            args["x-dead-letter-routing-key"] = dead_letter_to
            if self.queue_type == "quorum":
                args["x-dead-letter-strategy"] = "at-least-once"
        return args

    def _declare_topology(self) -> None:
        # Queues are looked up before they are declared (_declare), so that a max_lag other than the one
        # they were created with is not refused; self._admin is reopened after a lookup that found nothing.
        self._admin.exchange_declare(self._unrouted, "fanout", durable=True)
        self._declare(self._unrouted, self._queue_args(None))
        self._admin.queue_bind(self._unrouted, self._unrouted)
        self._admin.queue_declare(self._dlq, durable=True, arguments={"x-queue-type": "classic"})
        self._admin.exchange_declare(self._exchange, "topic", durable=True,
                                     arguments={"alternate-exchange": self._unrouted})

    def _declare(self, name: str, arguments: dict[str, Any]) -> bool:
        """Declare a durable queue; False when it already existed (with whatever arguments it was given)."""
        if self._counts(name) is not None:
            return False
        # Declared meanwhile by another client with other arguments: PRECONDITION_FAILED, reported as refused;
        # the next call finds the queue and uses it as it is.
        self._admin.queue_declare(name, durable=True, arguments=arguments)
        return True

    def _counts(self, name: str) -> tuple[int, int] | None:
        """(ready messages, consumers) of a queue, None when it does not exist."""
        self._connection()
        try:
            ok = self._admin.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != _NOT_FOUND:
                raise
            self._admin = self._conn.channel()
            return None
        return int(ok.method.message_count), int(ok.method.consumer_count)

    def ensure_group(self, group: str) -> None:
        """Declare the group's queue and bind it; a new queue takes over the frames held in ``S:unrouted``."""

        def declare() -> None:
            self._connection()  # a new connection declares the configured groups
            if group not in self._groups:
                self._declare_group(group)

        if group not in self._groups or self._conn is None:
            self._call(declare)

    def _declare_group(self, group: str) -> None:
        name = f"{self._exchange}.{group}"
        args = self._queue_args(self._dlq)
        if self.queue_type == "quorum":
            args["x-delivery-limit"] = self.settings.max_deliveries + 1
        created = self._declare(name, args)
        self._admin.queue_bind(name, self._exchange, routing_key="frames.#")
        if created:
            self._adopt_unrouted(name)
        self._groups.add(group)

    def _adopt_unrouted(self, queue: str) -> None:
        """Move the frames held while no group existed into ``queue``, in order, confirmed before acked."""
        with self._temp_channel() as channel:
            while True:
                taken = []
                for _ in range(self.confirm_window):
                    method, props, body = channel.basic_get(self._unrouted)
                    if method is None:
                        break
                    taken.append((method, props, body))
                if not taken:
                    return
                self._publish_all([("", queue, body, props) for _m, props, body in taken],
                                  time.monotonic() + self.settings.publish_timeout_s)
                channel.basic_ack(taken[-1][0].delivery_tag, multiple=True)

    # -- publishing -------------------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"{time.time_ns()}-{self._id_prefix}.{next(self._ids):x}"

    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Publish every entry with confirms in flight, after waiting for room in every known group."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        self._await_capacity(len(entries), deadline)
        ids = [self._new_id() for _ in entries]
        messages = [
            (self._exchange, f"frames.{camera}", encoded.payload,
             pika.BasicProperties(delivery_mode=2, message_id=entry_id, headers={HEADER: encoded.header}))
            for (camera, encoded), entry_id in zip(entries, ids, strict=True)
        ]
        self._call(lambda: self._publish_all(messages, deadline))
        self._count_published(len(entries))
        return ids

    def _publisher(self) -> Any:
        if self._pub is None:
            self._pub = self._connection().channel()
            impl = self._pub._impl
            impl.add_on_return_callback(self._on_return)
            impl.add_on_close_callback(self._on_publisher_closed)
            self._pub_error = None
            selected: list[Any] = []

            def on_select_ok(frame: Any) -> None:
                selected.append(frame)
                self._wake()

            impl.confirm_delivery(self._on_confirm, callback=on_select_ok)
            self._published = 0
            while not selected:
                self._pump(1.0)
        return self._pub

    def _on_publisher_closed(self, channel: Any, reason: Exception) -> None:
        if self._pub is not None and channel is self._pub._impl:  # not one given up after a confirm timeout
            self._pub_error = reason
            self._wake()

    def _on_confirm(self, frame: Any) -> None:
        if self._pub is None or frame.channel_number != self._pub.channel_number:
            return  # a late confirm on a channel given up after a confirm timeout
        method = frame.method
        tags = [method.delivery_tag]
        if method.multiple:
            tags = list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._unconfirmed))
        for tag in tags:
            slot = self._unconfirmed.pop(tag)
            if isinstance(method, spec.Basic.Nack):
                self._nacked.append(slot)
        self._wake()

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        self._returned.add(props.message_id)

    def _publish_all(self, messages: list[tuple[str, str, Any, Any]], deadline: float) -> None:
        """Publish with up to ``confirm_window`` unconfirmed; republish what the broker nacks (a full queue)
        until ``deadline``. Raises :class:`QueueError` for a message no queue would take.

        Waiting for confirms is part of the write, not backpressure: it is bounded by ``confirm_timeout_s``
        and its expiry is an outage (:class:`BackendUnavailable`: the frames may or may not be stored).
        """
        todo = list(range(len(messages)))
        while True:
            impl = self._publisher()._impl
            self._nacked, self._returned = [], set()
            confirm_deadline = time.monotonic() + self.confirm_timeout_s
            for slot in todo:
                self._await_confirms(confirm_deadline, self.confirm_window - 1)
                exchange, routing_key, body, props = messages[slot]
                self._published += 1
                self._unconfirmed[self._published] = slot
                # Channel.basic_publish insists on bytes; its own send path takes the payload's memoryview
                # as it is (see the module docstring), so the frame is not copied into a new buffer first.
                impl._raise_if_not_open()
                impl._send_method(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                                  (props, body))
                if self._conn._impl._get_write_buffer_size() >= _FLUSH_BYTES:  # one write per MiB, not per frame
                    self._pump(0)
            self._await_confirms(confirm_deadline, 0)
            returned = sorted(self._returned & {messages[slot][3].message_id for slot in todo})
            if returned:
                raise QueueError(f"rabbitmq at {self.address}: no queue is bound for {returned}")
            if not self._nacked:
                return
            todo = sorted(self._nacked)
            # Confirmed messages are stored: a timeout names them, so the caller does not publish them again.
            written = tuple(sorted(set(range(len(messages))) - set(todo)))
            self._wait_or_timeout(
                deadline, f"a queue of {self._exchange!r} is full (x-max-length, reject-publish)", written)

    def _await_confirms(self, deadline: float, at_most: int) -> None:
        while len(self._unconfirmed) > at_most:
            if self._pub_error is not None:
                raise self._pub_error  # e.g. the exchange was deleted: NOT_FOUND closed the channel
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Give the channel up, without closing it (the broker may be stalled, and pika cannot close
                # a channel behind its BlockingChannel's back); its late confirms and returns are ignored, the
                # connection's close closes it, and its unconfirmed messages are the caller's to publish again.
                self._pub = None
                self._unconfirmed.clear()
                raise BackendUnavailable(
                    f"rabbitmq at {self.address} unavailable: no publisher confirm within {self.confirm_timeout_s}s")
            self._pump(remaining)

    def _measure_backlog(self) -> tuple[int, bool]:
        return self._call(self._slowest_backlog)

    def _pause(self, remaining: float) -> None:
        self._call(lambda: self._pump(self.poll_s))

    def _slowest_backlog(self) -> tuple[int, bool]:
        """The largest backlog over the groups this instance knows (``S:unrouted`` when none), and whether
        any message waits. Other consumers' unacked deliveries are counted at their prefetch."""
        self._connection()
        self._pump(0)
        names = {f"{self._exchange}.{g}": self._subs.get(g) for g in self._groups} or {self._unrouted: None}
        worst, waiting = 0, False
        for name, sub in names.items():
            ready, consumers = self._counts(name) or (0, 0)
            own = sub.unacked if sub is not None else 0
            others = max(0, consumers - (sub is not None)) * self.prefetch
            worst = max(worst, ready + own + others)
            waiting = waiting or ready > 0
        return worst, waiting

    # -- consuming --------------------------------------------------------------------------------------
    def _subscription(self, group: str, count: int) -> _Subscription:
        if group in self._subs:
            return self._subs[group]
        channel = self._connection().channel()
        sub = _Subscription(channel, max(count, self.prefetch))
        channel.basic_qos(prefetch_count=sub.prefetch)

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            sub.buffer.append((method, props, body))
            self._wake()

        channel._impl.basic_consume(f"{self._exchange}.{group}", on_message, auto_ack=False)
        self._subs[group] = sub
        return sub

    def _take_over(self, group: str, consumer: str) -> None:
        """A consumer name is one consumer: an older instance of this process consuming under the same name
        (a restart within the process) gives its deliveries back, so this one receives them again."""
        key = (self.address, self._exchange, group, consumer)
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
            sub = self._subs.pop(group, None)
            if sub is not None:
                sub.channel.close()

        self._call(close)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        self._take_over(group, consumer)
        deadline = time.monotonic() + block_ms / 1000

        def fetch() -> list[RawEntry]:
            sub = self._subscription(group, count)
            self._pump(0)
            entries: list[RawEntry] = []
            while True:
                while not sub.buffer and time.monotonic() < deadline:
                    self._pump(deadline - time.monotonic())
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
                    entry, problem = self._raw(sub, method, props, body)
                    if problem is None:
                        entries.append(entry)
                        continue
                    self._dead_letter(group, entry, "bad_header", problem)
                    metrics.dead_lettered.labels(reason="bad_header").inc()
                if entries or time.monotonic() >= deadline:  # else all were dead-lettered: wait on
                    return entries

        return self._call(fetch)

    @staticmethod
    def _raw(sub: _Subscription, method: Any, props: Any, body: bytes) -> tuple[RawEntry, str | None]:
        """The entry a delivery carries, and what is wrong with its AMQP header ``h`` if it is not bytes.

        Anyone who can publish to the exchange sets these headers: ``x-fb-attempts`` and ``x-delivery-count``
        count only as ints in [0, 2**31) and ``h`` only as a byte array or long string (which pika decodes to
        ``str`` when it is UTF-8, so it is encoded back: the bytes are the ones sent).
        """
        headers = props.headers if isinstance(props.headers, dict) else {}
        returns = _count(headers.get("x-delivery-count")) or int(method.redelivered)
        attempts = _count(headers.get(ATTEMPTS)) + returns + 1
        entry_id = props.message_id if isinstance(props.message_id, str) and props.message_id else None
        header, problem = headers.get(HEADER), None
        if isinstance(header, str):
            header = header.encode()
        elif header is not None and not isinstance(header, bytes):
            header, problem = None, f"AMQP header h is {_show(header)}, not a byte array or long string"
        token = _Token(sub, method.delivery_tag)
        return RawEntry(entry_id or f"tag-{method.delivery_tag}", header, body, attempts, token), problem

    def _live(self, token: _Token) -> bool:
        """Whether the delivery can still be acked: its channel is the current one (else it was requeued)."""
        return token.sub.channel.is_open and token.tag in token.sub.handed

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """``basic.ack`` the deliveries; one ``multiple`` ack when they are all this channel has handed out."""
        by_sub: dict[_Subscription, list[int]] = {}
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
                    sub.channel._impl.basic_ack(last, multiple=True)
                else:
                    for tag in tags:
                        sub.channel._impl.basic_ack(tag)
            self._pump(0)

        self._call(ack_all)

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Give a delivery back. Without a delay a quorum queue requeues it (counting the delivery); with one,
        or on a classic queue, it is republished (to a delay queue) carrying its attempts, then acked."""
        token: _Token = delivery.raw.token
        if not self._live(token):
            return  # its channel is gone: the broker has requeued it already
        group_queue = f"{self._exchange}.{delivery.group}"

        def give_back() -> None:
            if delay_s <= 0 and self.queue_type == "quorum":
                del token.sub.handed[token.tag]
                token.sub.channel._impl.basic_nack(token.tag, requeue=True)
                self._pump(0)
                return
            target = group_queue
            if delay_s > 0:
                step = delay_step_ms(delay_s)
                target = f"{group_queue}.retry.{step}"
                if target not in self._delay_queues:
                    args = self._queue_args(group_queue)
                    args["x-message-ttl"] = step
                    self._declare(target, args)
                    self._delay_queues.add(target)
            raw = delivery.raw
            props = pika.BasicProperties(delivery_mode=2, message_id=raw.id,
                                         headers={HEADER: raw.header, ATTEMPTS: raw.attempts})
            self._publish_all([("", target, raw.payload, props)], time.monotonic() + self.settings.publish_timeout_s)
            self._ack_token(token)

        self._call(give_back)

    def _ack_token(self, token: _Token) -> None:
        del token.sub.handed[token.tag]
        token.sub.channel._impl.basic_ack(token.tag)
        self._pump(0)

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """Publish the entry to ``S:dlq`` with why, confirmed, then ack it in the group."""
        headers: dict[str, Any] = {
            "x-fb-reason": reason, "x-fb-error": error[:1000], ATTEMPTS: entry.attempts,
            "x-fb-original-id": entry.id, "x-fb-group": group, "x-fb-at-ms": int(time.time() * 1000),
        }
        if entry.header is not None:
            headers[HEADER] = entry.header
        props = pika.BasicProperties(delivery_mode=2, message_id=self._new_id(), headers=headers)
        token: _Token = entry.token

        def move() -> None:
            self._publish_all([("", self._dlq, entry.payload or b"", props)],
                              time.monotonic() + self.settings.publish_timeout_s)
            if self._live(token):
                self._ack_token(token)

        self._call(move)

    # -- inspection -------------------------------------------------------------------------------------
    def stats(self, group: str) -> QueueStats:
        """Ready messages (passive declare) plus what this instance holds: AMQP does not tell one client
        what other consumers hold unacked, so ``pending`` counts this instance's deliveries only."""

        def read() -> QueueStats:
            self._connection()
            dead = (self._counts(self._dlq) or (0, 0))[0]
            counts = self._counts(f"{self._exchange}.{group}")
            if counts is None:
                depth = max([self._counts(self._unrouted) or (0, 0)] + [
                    self._counts(f"{self._exchange}.{g}") or (0, 0) for g in self._groups])[0]
                return QueueStats(depth, depth, 0, 0, dead)
            sub = self._subs.get(group)
            if sub is None:
                return QueueStats(counts[0], counts[0], 0, 0, dead)
            # A round trip on the consumer's channel: deliveries the broker counted out before answering the
            # passive declare are in our buffer once this answer is back.
            sub.channel.basic_qos(prefetch_count=sub.prefetch)
            self._pump(0)
            now = time.monotonic()
            oldest = int((now - min(sub.handed.values(), default=now)) * 1000)
            lag = counts[0] + len(sub.buffer)
            return QueueStats(lag + len(sub.handed), lag, len(sub.handed), oldest, dead)

        return self._call(read)

    # -- dead letters -----------------------------------------------------------------------------------
    @contextmanager
    def _dead_letter_scan(self) -> Iterator[_Scan]:
        """A reading of the dead-letter queue (:meth:`_each_dead_letter`); when the caller is done (at the end of
        the queue or earlier), what it took and did not ack goes back in place before this returns.

        Closing the channel would requeue them too, but the broker does that asynchronously, and so it does a
        nack: a passive declare just after (``stats()``) could count the queue without them, which the
        conformance suite saw once on a loaded machine, and which 300 letters of 1 MiB show every time. So after
        the nack this waits, up to ``confirm_timeout_s``, until the queue holds what it held when the reading
        stopped plus what the reading gives back (less, if someone else takes dead letters meanwhile: then it
        returns at the deadline).
        """
        with self._temp_channel() as channel:
            scan = _Scan(channel)
            yield scan
            channel.basic_nack(delivery_tag=0, multiple=True, requeue=True)
            expected = scan.remaining + scan.held
            deadline = time.monotonic() + self.confirm_timeout_s
            while (channel.queue_declare(self._dlq, passive=True).method.message_count < expected
                   and time.monotonic() < deadline):
                self._pump(self.poll_s)

    def _each_dead_letter(self, scan: _Scan) -> Iterator[tuple[Any, DeadLetter]]:
        """The dead-letter queue's messages in order, taken one at a time (``basic.get``) without ack."""
        while True:
            method, props, body = scan.channel.basic_get(self._dlq)
            if method is None:
                scan.remaining = 0
                return
            scan.held += 1
            scan.remaining = method.message_count
            yield method, self._letter(props, body)

    def _letter(self, props: Any, body: bytes) -> DeadLetter:
        """A dead letter from its message; total, since the broker dead-letters foreign messages with their
        own headers (the delivery-limit backstop), whatever those hold."""
        headers = props.headers if isinstance(props.headers, dict) else {}

        def text(key: str, default: str = "") -> str:
            value = headers.get(key, default)
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

        # Dead-lettered by the broker itself (the delivery-limit backstop): x-first-death-* and x-death say why
        # and when, not how often it was delivered (attempts 0).
        deaths = headers.get("x-death")
        death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
        when = death.get("time")
        stamp = headers.get("x-fb-at-ms")
        at_ms = int(stamp) if _is_int(stamp) else int(when.timestamp() * 1000) if isinstance(when, datetime) else 0
        message_id = props.message_id if isinstance(props.message_id, str) else ""
        header = headers.get(HEADER)
        return DeadLetter(
            id=message_id, original_id=text("x-fb-original-id", message_id),
            group=text("x-fb-group", text("x-first-death-queue").removeprefix(f"{self._exchange}.")),
            reason=text("x-fb-reason", text("x-first-death-reason")), error=text("x-fb-error"),
            attempts=_count(headers.get(ATTEMPTS)), dead_lettered_at_ms=at_ms,
            header=header.encode() if isinstance(header, str) else header if isinstance(header, bytes) else None,
            payload=body,
        )

    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """List the dead-letter queue in order (``basic.get`` without ack, given back before returning).

        Holds at most ``count`` letters: it stops reading once it has them after ``after``, and while it looks
        for ``after`` it keeps only the first ``count`` letters whose id sorts after it (what is returned when
        ``after`` is no longer in the queue). Every message read before it stops goes through this process,
        one at a time.
        """

        def scan() -> list[DeadLetter]:
            kept: list[DeadLetter] = []
            found = after is None
            with self._dead_letter_scan() as scan:
                for _method, letter in self._each_dead_letter(scan):
                    if not found and letter.id == after:
                        found, kept = True, []  # from here on: the ones after it, in queue order
                        continue
                    if found or letter.id > str(after):
                        if len(kept) < count:
                            kept.append(letter)
                        if found and len(kept) >= count:
                            break
            return kept

        return self._call(scan)

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """Publish each dead letter to its group's queue (confirmed), then ack it out of the dead-letter queue.

        Unlike Redis, where a replayed entry reaches every group again, only the group that gave up sees it.
        Ids that are not a dead letter's count as not found.
        """
        wanted = {entry_id for entry_id in ids if isinstance(entry_id, str) and entry_id}

        def replay() -> int:
            replayed = 0
            with self._dead_letter_scan() as scan:
                for method, letter in self._each_dead_letter(scan):
                    if letter.id not in wanted:
                        continue
                    wanted.discard(letter.id)
                    props = pika.BasicProperties(delivery_mode=2, message_id=self._new_id(),
                                                 headers={HEADER: letter.header})
                    self._publish_all([("", f"{self._exchange}.{letter.group}", letter.payload, props)],
                                      time.monotonic() + self.settings.publish_timeout_s)
                    scan.ack(method)
                    replayed += 1
                    if not wanted:
                        break  # every id found: the rest of the queue need not be read
            return replayed

        return self._call(replay) if wanted else 0

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """Ack the given dead letters out of their queue, or purge it whole with ``None``; ids that are not a
        dead letter's count as not found."""
        if ids is None:

            def purge_all() -> int:
                self._connection()
                return int(self._admin.queue_purge(self._dlq).method.message_count)

            return self._call(purge_all)
        wanted = {entry_id for entry_id in ids if isinstance(entry_id, str) and entry_id}

        def purge() -> int:
            purged = 0
            with self._dead_letter_scan() as scan:
                for method, letter in self._each_dead_letter(scan):
                    if letter.id in wanted:
                        wanted.discard(letter.id)
                        scan.ack(method)
                        purged += 1
                        if not wanted:
                            break  # every id found: the rest of the queue need not be read
            return purged

        return self._call(purge) if wanted else 0

    def close(self) -> None:
        """Close the connection: deliveries not acked go back to their queues for other consumers."""
        with self._lock:
            self._disconnect()
