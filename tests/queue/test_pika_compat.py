"""The pika behaviour queue/rabbitmq/pika_compat.py relies on, pinned against the real broker.

Each test is one function of pika_compat, and what the backend needs of it. A pika release that changes one
of these internals fails here first, with the name of the function, rather than somewhere in the backend.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from frame_buffer.queue.rabbitmq import pika_compat
from tests.conftest import AMQP_URL

#: A wait far longer than any of these round trips: a callback that does not end it shows as taking this long.
LONG_S = 60.0


@pytest.fixture
def connection() -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


def private_queue(channel: Any, **arguments: Any) -> str:
    """A server-named queue that goes with the connection."""
    return str(channel.queue_declare("", exclusive=True, arguments=arguments or None).method.queue)


class RecvSpy:
    """The transport's socket, recording the size of each ``recv``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sizes: list[int] = []

    def recv(self, size: int, *args: Any) -> bytes:
        self.sizes.append(size)
        return self.sock.recv(size, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_set_recv_size_makes_every_read_ask_for_that_many_bytes(connection: Any) -> None:
    spy = RecvSpy(connection._impl._transport._sock)
    connection._impl._transport._sock = spy
    pika_compat.set_recv_size(connection, 256 * 1024)
    channel = connection.channel()
    queue = private_queue(channel)
    channel.basic_publish("", queue, b"x" * 1024 * 1024)
    assert channel.basic_get(queue, auto_ack=True)[2] == b"x" * 1024 * 1024
    assert spy.sizes and set(spy.sizes) == {256 * 1024}


def test_consume_runs_the_callback_as_deliveries_arrive_and_end_wait_ends_the_wait(connection: Any) -> None:
    channel = connection.channel()
    queue = private_queue(channel)
    channel.basic_publish("", queue, b"one")
    got: list[bytes] = []

    def on_message(_channel: Any, _method: Any, _props: Any, body: bytes) -> None:
        got.append(body)
        pika_compat.end_wait(connection)

    pika_compat.consume(channel, queue, on_message)
    started = time.monotonic()
    connection.process_data_events(time_limit=LONG_S)
    assert got == [b"one"]
    assert time.monotonic() - started < LONG_S / 2, "end_wait did not end process_data_events"


def test_confirms_come_by_callback_with_returns_and_nacks(connection: Any) -> None:
    admin = connection.channel()
    full = private_queue(admin, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    channel = connection.channel()
    selected: list[str] = []
    outcomes: dict[int, str] = {}  # delivery tag -> Ack or Nack (a multiple one settles every tag up to its own)
    returned: list[str] = []
    closed: list[tuple[bool, int | None]] = []

    def on_confirm(frame: Any) -> None:
        assert frame.channel_number == channel.channel_number
        method = frame.method
        tags = range(1, method.delivery_tag + 1) if method.multiple else [method.delivery_tag]
        outcomes.update({tag: type(method).__name__ for tag in tags if tag not in outcomes})
        pika_compat.end_wait(connection)

    def on_return(_channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        returned.append(props.message_id)

    def on_close(impl: Any, reason: Exception) -> None:
        closed.append((pika_compat.is_channel(channel, impl), getattr(reason, "reply_code", None)))
        pika_compat.end_wait(connection)

    def on_selected(frame: Any) -> None:
        selected.append(type(frame.method).__name__)
        pika_compat.end_wait(connection)

    pika_compat.enable_confirms(channel, on_confirm, on_return, on_close, on_selected)
    while not selected:
        connection.process_data_events(time_limit=LONG_S)
    assert selected == ["SelectOk"]

    body = memoryview(bytearray(b"payload"))  # a memoryview goes out as it is
    pika_compat.publish(channel, "", full, pika.BasicProperties(message_id="kept"), body)
    pika_compat.publish(channel, "", full, pika.BasicProperties(message_id="refused"), body)
    pika_compat.publish(channel, "", "no-such-queue", pika.BasicProperties(message_id="unroutable"), b"x")
    while len(outcomes) < 3:
        connection.process_data_events(time_limit=LONG_S)
    assert outcomes == {1: "Ack", 2: "Nack", 3: "Ack"}  # the full queue refused the second
    assert returned == ["unroutable"]  # returned before its confirm: known once the confirm is in
    assert admin.basic_get(full, auto_ack=True)[2] == b"payload"

    pika_compat.publish(channel, "no-such-exchange", "k", pika.BasicProperties(message_id="lost"), b"x")
    while not closed:
        connection.process_data_events(time_limit=LONG_S)
    assert closed == [(True, 404)]
    assert not pika_compat.is_channel(admin, channel._impl)
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        pika_compat.publish(channel, "", full, pika.BasicProperties(), b"x")


def test_a_publish_waits_in_the_write_buffer_until_the_connection_runs(connection: Any) -> None:
    channel = connection.channel()
    queue = private_queue(channel)
    assert pika_compat.write_buffer_size(connection) == 0
    pika_compat.publish(channel, "", queue, pika.BasicProperties(), b"x" * 1024 * 1024)
    assert pika_compat.write_buffer_size(connection) >= 1024 * 1024
    while pika_compat.write_buffer_size(connection):
        connection.process_data_events(time_limit=1)
    assert channel.queue_declare(queue, passive=True).method.message_count == 1


def test_ack_and_requeue_go_out_with_the_next_write(connection: Any) -> None:
    channel = connection.channel()
    queue = private_queue(channel)
    for body in (b"a", b"b", b"c"):
        channel.basic_publish("", queue, body)
    got: list[tuple[int, bool, bytes]] = []

    def on_message(_channel: Any, method: Any, _props: Any, body: bytes) -> None:
        got.append((method.delivery_tag, method.redelivered, body))
        pika_compat.end_wait(connection)

    channel.basic_qos(prefetch_count=3)
    pika_compat.consume(channel, queue, on_message)
    while len(got) < 3:
        connection.process_data_events(time_limit=LONG_S)
    assert got == [(1, False, b"a"), (2, False, b"b"), (3, False, b"c")]
    pika_compat.ack(channel, 2, multiple=True)  # a and b
    pika_compat.requeue(channel, 3)  # c comes back, redelivered
    while len(got) < 4:
        connection.process_data_events(time_limit=LONG_S)
    assert got[3] == (4, True, b"c")
    pika_compat.ack(channel, 4)
    connection.process_data_events(time_limit=0)
    other = connection.channel()
    assert other.queue_declare(queue, passive=True).method.message_count == 0
    channel.close()  # unacked deliveries would come back now: there are none
    assert other.queue_declare(queue, passive=True).method.message_count == 0
