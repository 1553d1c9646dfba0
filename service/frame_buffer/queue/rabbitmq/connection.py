"""The backend's one connection to the broker: opened on demand, reopened with backoff, every I/O through it.

A failed attempt makes the next one wait (the package's :mod:`~frame_buffer.backoff`); until then calls fail
fast with :class:`BackendUnavailable` (or :class:`BackendRefused`, still the broker's last answer). A
connection idle past a heartbeat is probed before use, so that an outage is found by the call that meets it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pika
import pika.exceptions

from frame_buffer.backoff import Backoff
from frame_buffer.checks import masked_url
from frame_buffer.queue.base import BackendRefused, BackendUnavailable, QueueError
from frame_buffer.queue.rabbitmq import pika_compat

T = TypeVar("T")
QueueType = Literal["quorum", "classic"]
_ACCESS_REFUSED = 403
#: What pika raises when the broker closes the connection while it is being opened: credentials or vhost refused.
_LOGIN_REFUSED = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError,
                  pika.exceptions.ProbableAccessDeniedError)
_RECV_BYTES = 256 * 1024


@dataclass
class Tuning:
    """The backend's options that its parts share (see :class:`RabbitMQQueue` for each)."""

    queue_type: QueueType
    prefetch: int
    confirm_window: int
    confirm_timeout_s: float
    poll_s: float


def is_refusal(exc: BaseException) -> bool:
    """Whether the broker refused us (credentials, vhost, a permission) rather than failed."""
    if isinstance(exc, _LOGIN_REFUSED):
        return True
    closed = (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker)
    return isinstance(exc, closed) and exc.reply_code == _ACCESS_REFUSED


class Link:
    """The connection, its lock and its reconnection state.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        heartbeat_s: AMQP heartbeat; a silent peer is declared dead after two.
        blocked_timeout_s: how long the broker may block publishers (a resource alarm) before pika gives up.
        backoff: wait before the next attempt after the n-th failed one in a row.
        on_connect: run on each new connection (declares the topology).
        on_disconnect: run when the connection is forgotten (drops the state that lived on it).
    """

    def __init__(self, url: str, *, heartbeat_s: int, blocked_timeout_s: float, backoff: Backoff,
                 on_connect: Callable[[], None], on_disconnect: Callable[[], None]) -> None:
        self.url = url
        self.display_url = masked_url(url)
        self.params = pika.URLParameters(url)
        self.params.heartbeat = heartbeat_s
        self.params.connection_attempts = 1
        self.params.blocked_connection_timeout = blocked_timeout_s
        self.address = f"{self.params.host}:{self.params.port}"
        self.backoff = backoff
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self.lock = threading.RLock()
        self.conn: Any = None
        self._failures = 0
        self._next_attempt = 0.0
        self._refusal: str | None = None  # why the last connection attempt was refused, if it was
        self.last_io = 0.0

    def call(self, fn: Callable[[], T]) -> T:
        """Run broker I/O under the lock; connection failures become :class:`BackendUnavailable`."""
        with self.lock:
            try:
                result = fn()
            except (pika.exceptions.AMQPError, OSError) as exc:
                # A channel error (a queue deleted under us, arguments that differ) is the broker refusing,
                # not an outage; either way start over on a fresh connection: deliveries go back to the queue.
                refused = isinstance(exc, pika.exceptions.AMQPChannelError) and bool(self.conn and self.conn.is_open)
                self.disconnect()
                if is_refusal(exc):
                    raise self.refused(exc) from exc
                if refused:
                    raise QueueError(f"rabbitmq at {self.address} refused: {exc!r}") from exc
                raise BackendUnavailable(f"rabbitmq at {self.address} unavailable: {exc!r}") from exc
            self.last_io = time.monotonic()
            return result

    def refused(self, exc: BaseException) -> BackendRefused:
        return BackendRefused(f"rabbitmq at {self.address} refused {self.display_url}: {exc} "
                              "(check the user, password, vhost and permissions)")

    def connection(self) -> Any:
        """The open connection, opening one (with backoff after a failure) when needed."""
        if self.conn is not None and time.monotonic() - self.last_io > self.params.heartbeat:
            try:  # idle past a heartbeat: find out now whether the broker dropped us, and reconnect if so
                self.conn.process_data_events(0)
            except (pika.exceptions.AMQPError, OSError):
                self.disconnect()
        if self.conn is not None:
            return self.conn
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
            self._failures += 1
            self._next_attempt = now + self.backoff.compute(self._failures)
            self._refusal = str(self.refused(exc)) if is_refusal(exc) else None
            raise
        pika_compat.set_recv_size(conn, _RECV_BYTES)
        self._failures, self.conn = 0, conn
        self._on_connect()
        return conn

    def disconnect(self) -> None:
        """Forget the connection and everything on it; unacked deliveries go back to their queues."""
        conn, self.conn = self.conn, None
        self._on_disconnect()
        if conn is not None and conn.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):  # broken already: nothing to release
                conn.close()

    def end_wait(self) -> None:
        """Make a pending ``process_data_events`` return now (from a callback that ran inside it)."""
        pika_compat.end_wait(self.conn)

    def pump(self, timeout: float) -> None:
        """Send what is queued and handle what arrived, waiting up to ``timeout`` for something to arrive."""
        self.conn.process_data_events(time_limit=max(0.0, timeout))

    def channel(self) -> Any:
        """A new channel on the open connection (opening one if needed)."""
        return self.connection().channel()

    @contextmanager
    def temp_channel(self) -> Iterator[Any]:
        """A channel for one operation: closing it gives back whatever it took and did not ack."""
        channel = self.channel()
        try:
            yield channel
        finally:
            if channel.is_open:
                channel.close()
