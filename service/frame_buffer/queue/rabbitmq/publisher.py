"""Publishing with publisher confirms: up to ``confirm_window`` messages in flight on one channel.

A batch is written once every message of it is confirmed. Messages the broker nacks (a full queue:
``x-overflow = reject-publish``) are published again until the publish deadline, waiting for consumers in
between; a mandatory message no queue takes is returned, which is an error. Waiting for confirms is part of the
write, not backpressure: it is bounded by ``confirm_timeout_s`` and its expiry is an outage.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from pika import spec

from frame_buffer.queue.base import BackendUnavailable, QueueError
from frame_buffer.queue.rabbitmq import pika_compat
from frame_buffer.queue.rabbitmq.connection import Link, Tuning

#: (exchange, routing key, body, properties) of one message to publish.
Message = tuple[str, str, Any, Any]
#: Waits for consumers to make room, or raises BackpressureTimeout(why, written) at the deadline.
WaitOrTimeout = Callable[[float, str, tuple[int, ...]], None]
_FLUSH_BYTES = 1024 * 1024


class Publisher:
    """The confirming publisher channel of a :class:`Link` and the state of the messages in flight on it."""

    def __init__(self, link: Link, tuning: Tuning, stream: str, wait_or_timeout: WaitOrTimeout) -> None:
        self._link = link
        self._tuning = tuning
        self._stream = stream
        self._wait_or_timeout = wait_or_timeout
        self._channel: Any = None
        self._error: Exception | None = None
        self._unconfirmed: dict[int, int] = {}  # delivery tag -> position in the batch
        self._nacked: list[int] = []
        self._returned: set[str] = set()
        self._published = 0

    def reset(self) -> None:
        """Forget the channel and what was in flight on it (the connection is gone)."""
        self._channel = None
        self._unconfirmed.clear()

    def _open(self) -> Any:
        if self._channel is None:
            self._channel = self._link.channel()
            self._error = None
            selected: list[Any] = []

            def on_selected(frame: Any) -> None:
                selected.append(frame)
                self._link.end_wait()

            pika_compat.enable_confirms(self._channel, self._on_confirm, self._on_return, self._on_closed, on_selected)
            self._published = 0
            while not selected:
                self._link.pump(1.0)
        return self._channel

    def _on_closed(self, channel: Any, reason: Exception) -> None:
        if self._channel is not None and pika_compat.is_channel(self._channel, channel):  # not one given up
            self._error = reason
            self._link.end_wait()

    def _on_confirm(self, frame: Any) -> None:
        if self._channel is None or frame.channel_number != self._channel.channel_number:
            return  # a late confirm on a channel given up after a confirm timeout
        method = frame.method
        tags = [method.delivery_tag]
        if method.multiple:
            tags = list(itertools.takewhile(lambda t: t <= method.delivery_tag, self._unconfirmed))
        for tag in tags:
            slot = self._unconfirmed.pop(tag)
            if isinstance(method, spec.Basic.Nack):
                self._nacked.append(slot)
        self._link.end_wait()

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        self._returned.add(props.message_id)

    def publish_all(self, messages: list[Message], deadline: float) -> None:
        """Publish with up to ``confirm_window`` unconfirmed; republish what the broker nacks (a full queue)
        until ``deadline``. Raises :class:`QueueError` for a message no queue would take. Runs inside
        :meth:`Link.call`."""
        todo = list(range(len(messages)))
        while True:
            channel = self._open()
            self._nacked, self._returned = [], set()
            confirm_deadline = time.monotonic() + self._tuning.confirm_timeout_s
            for slot in todo:
                self._await_confirms(confirm_deadline, self._tuning.confirm_window - 1)
                exchange, routing_key, body, props = messages[slot]
                self._published += 1
                self._unconfirmed[self._published] = slot
                pika_compat.publish(channel, exchange, routing_key, props, body)
                if pika_compat.write_buffer_size(self._link.conn) >= _FLUSH_BYTES:  # one write per MiB, not per frame
                    self._link.pump(0)
            self._await_confirms(confirm_deadline, 0)
            returned = sorted(self._returned & {messages[slot][3].message_id for slot in todo})
            if returned:
                raise QueueError(f"rabbitmq at {self._link.address}: no queue is bound for {returned}")
            if not self._nacked:
                return
            todo = sorted(self._nacked)
            # Confirmed messages are stored: a timeout names them, so the caller does not publish them again.
            written = tuple(sorted(set(range(len(messages))) - set(todo)))
            self._wait_or_timeout(
                deadline, f"a queue of {self._stream!r} is full (x-max-length, reject-publish)", written)

    def _await_confirms(self, deadline: float, at_most: int) -> None:
        while len(self._unconfirmed) > at_most:
            if self._error is not None:
                raise self._error  # e.g. the exchange was deleted: NOT_FOUND closed the channel
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Give the channel up, without closing it (the broker may be stalled, and pika cannot close
                # a channel behind its BlockingChannel's back); its late confirms and returns are ignored, the
                # connection's close closes it, and its unconfirmed messages are the caller's to publish again.
                self._channel = None
                self._unconfirmed.clear()
                raise BackendUnavailable(f"rabbitmq at {self._link.address} unavailable: no publisher confirm "
                                         f"within {self._tuning.confirm_timeout_s}s")
            self._link.pump(remaining)
