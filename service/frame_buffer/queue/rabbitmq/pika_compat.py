"""Every use of a pika internal, in one place, each with the reason the public API does not do.

pika's ``BlockingConnection`` API waits and flushes on every call. The backend needs what it does not offer:
publisher confirms with many messages in flight (``BlockingChannel.confirm_delivery`` makes each publish wait
for its own confirm), a publish that takes the payload's buffer as it is (``BlockingChannel.basic_publish``
insists on ``bytes``), acks and a consumer whose callbacks run as frames arrive without a flush each, a way to
end a ``process_data_events`` wait from such a callback, and larger socket reads. So it reaches one level
down, to the connection and channel implementations the blocking API wraps (``_impl``).

``tests/queue/test_pika_compat.py`` pins each behaviour relied on here against a real broker, so that a pika
release that changes one fails there first; ``pyproject.toml`` bounds pika to the minor version it runs.
Connections and channels are typed ``Any``: pika ships no type information.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pika import spec


def set_recv_size(connection: Any, nbytes: int) -> None:
    """Make ``connection`` read up to ``nbytes`` per ``recv``.

    pika reads the socket 4 KiB at a time and appends each read to a bytes buffer, which copies a 6 MB frame
    hundreds of times; larger reads make that a handful. An instance override of the transport's class
    constant ``_MAX_RECV_BYTES``: should pika stop reading it, it just reads as before.
    """
    connection._impl._transport._MAX_RECV_BYTES = nbytes


def end_wait(connection: Any) -> None:
    """Make the ``process_data_events`` that runs the calling callback return once the callback is done.

    Callbacks registered here run inside pika's I/O loop, which goes on waiting until its time limit;
    a dispatch request for a negative channel number is pika's own way of ending that wait.
    """
    connection._request_channel_dispatch(-1)


def write_buffer_size(connection: Any) -> int:
    """Bytes written to ``connection`` and not yet sent to the socket (a publisher flushes past a threshold)."""
    return int(connection._impl._get_write_buffer_size())


def enable_confirms(
    channel: Any,
    on_confirm: Callable[[Any], None],
    on_return: Callable[[Any, Any, Any, bytes], None],
    on_close: Callable[[Any, Exception], None],
    on_selected: Callable[[Any], None],
) -> None:
    """Put ``channel`` in confirm mode with callbacks instead of a wait per publish.

    ``on_confirm(frame)`` gets each ``Basic.Ack`` / ``Basic.Nack`` (``frame.method``, ``multiple`` included);
    ``on_return(channel, method, properties, body)`` a mandatory message no queue took; ``on_close(channel,
    reason)`` the channel's closing, with ``channel`` the implementation (:func:`is_channel` tells whose);
    ``on_selected(frame)`` the broker's ``Confirm.SelectOk``.
    """
    impl = channel._impl
    impl.add_on_return_callback(on_return)
    impl.add_on_close_callback(on_close)
    impl.confirm_delivery(on_confirm, callback=on_selected)


def is_channel(channel: Any, callback_channel: Any) -> bool:
    """Whether ``callback_channel``, as a callback of :func:`enable_confirms` receives it, is ``channel``."""
    return channel._impl is callback_channel


def publish(channel: Any, exchange: str, routing_key: str, properties: Any, body: bytes | memoryview) -> None:
    """Send one mandatory ``basic.publish`` without waiting or flushing; ``body`` may be a memoryview.

    ``BlockingChannel.basic_publish`` insists on bytes; the send path below it takes the payload's buffer as
    it is, so a frame is not copied into a new one first. Raises ``ChannelWrongStateError`` unless the
    channel is open, as the public API does.
    """
    impl = channel._impl
    impl._raise_if_not_open()
    impl._send_method(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                      (properties, body))


def consume(channel: Any, queue: str, on_message: Callable[[Any, Any, Any, bytes], None]) -> None:
    """``basic.consume`` with manual acks; ``on_message(channel, method, properties, body)`` runs as each
    delivery arrives (inside the I/O loop), not queued until ``process_data_events`` returns."""
    channel._impl.basic_consume(queue, on_message, auto_ack=False)


def ack(channel: Any, delivery_tag: int, multiple: bool = False) -> None:
    """``basic.ack`` queued for the next write, without the flush (a wait) of ``BlockingChannel.basic_ack``."""
    channel._impl.basic_ack(delivery_tag, multiple=multiple)


def requeue(channel: Any, delivery_tag: int) -> None:
    """``basic.nack`` with requeue, queued for the next write like :func:`ack`."""
    channel._impl.basic_nack(delivery_tag, requeue=True)
