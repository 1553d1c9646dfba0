"""Hostile messages published straight to a stream's exchange (raw pika ``basic_publish``): whatever their
AMQP headers and bodies, consume never raises, every valid frame is delivered and acked exactly once, and every
other message is dead-lettered with a reason."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import pika
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frame_buffer.codec import FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue import DeadLetter, Delivery, QueueSettings
from frame_buffer.queue.rabbitmq import RabbitMQQueue, delete_topology
from tests.conftest import AMQP_URL
from tests.frames import make_frames

DEADLINE_S = 30.0
#: Every reason a dead letter can carry (the codec's tags and delivery_limit).
REASONS = {"missing_header", "missing_payload", "bad_header", "missing_field", "bad_version", "bad_field",
           "bad_codec", "bad_length", "truncated", "bad_checksum", "bad_dtype", "bad_shape", "bad_payload",
           "delivery_limit", "frame_too_large"}


class Stream:
    """A stream of its own on the machine's broker: the backend, and a raw pika channel with confirms."""

    def __init__(self, **options: Any) -> None:
        self.name = f"test_{uuid.uuid4().hex[:12]}"
        self.queue = RabbitMQQueue(AMQP_URL, QueueSettings(stream=self.name, groups=("g",), **options))
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.codec = FrameCodec()

    def publish_raw(self, headers: dict[str, Any] | None, body: bytes, message_id: str | None = None,
                    camera: str = "cam") -> None:
        """What a foreign producer does: a persistent message with these headers, to ``frames.<camera>``."""
        props = pika.BasicProperties(delivery_mode=2, headers=headers, message_id=message_id)
        self.channel.basic_publish(self.name, f"frames.{camera}", body, props, mandatory=True)

    def valid(self, seq: int, **headers: Any) -> tuple[dict[str, Any], bytes]:
        """Headers and body of a valid frame (``h`` as the service writes it) plus extra ``headers``."""
        encoded = self.codec.encode(Frame("raw", seq, make_frames(1, shape=(4, 4))[0].data))
        return {"h": encoded.header, **headers}, bytes(encoded.payload)

    def collect(self, frames: int, letters: int) -> tuple[list[Delivery], list[DeadLetter]]:
        """Consume and ack until ``frames`` arrived and ``letters`` are dead-lettered; fail after DEADLINE_S."""
        got: list[Delivery] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < frames or self.queue.stats("g").dead_letters < letters:
            assert time.monotonic() < deadline, f"{len(got)} of {frames} frames, letters {self.queue.stats('g')}"
            batch = self.queue.consume("g", "c", count=50, block_ms=100)
            self.queue.ack(batch)
            got.extend(batch)
        assert self.queue.consume("g", "c", count=50, block_ms=0) == []
        return got, self.queue.dead_letters(count=10_000)

    def close(self) -> None:
        self.queue.close()
        self.connection.close()
        delete_topology(AMQP_URL, QueueSettings(stream=self.name), groups=("g",))


@pytest.fixture
def stream() -> Iterator[Stream]:
    opened = Stream(max_deliveries=5)
    yield opened
    opened.close()


def test_hostile_headers_are_dead_lettered_with_their_reason(stream: Stream) -> None:
    hostile: list[tuple[dict[str, Any] | None, bytes, str]] = [
        (None, b"no headers at all", "missing_header"),
        ({}, b"empty headers", "missing_header"),
        ({"h": None}, b"h is void", "missing_header"),
        ({"h": 5}, b"h an int", "bad_header"),
        ({"h": True}, b"h a bool", "bad_header"),
        ({"h": ["x", 1]}, b"h an array", "bad_header"),
        ({"h": {"v": 1}}, b"h a table", "bad_header"),
        ({"h": Decimal("1.5")}, b"h a decimal", "bad_header"),
        ({"h": datetime(2020, 1, 1, tzinfo=UTC)}, b"h a timestamp", "bad_header"),
        ({"h": "a long string"}, b"h text, not msgpack", "bad_header"),
        ({"h": b""}, b"h empty", "bad_header"),
        ({"h": b"\xc1"}, b"h not msgpack", "bad_header"),
        ({"h": msgpack.packb([1, 2])}, b"h not a map", "bad_header"),
        ({"h": stream.valid(0)[0]["h"]}, b"", "truncated"),
    ]
    for index, (headers, body, _reason) in enumerate(hostile):
        stream.publish_raw(headers, body, message_id=f"hostile-{index}")
    got, letters = stream.collect(0, len(hostile))
    assert got == []
    by_body = {letter.payload: letter for letter in letters}
    assert {body: by_body[body].reason for _h, body, _r in hostile} == {body: r for _h, body, r in hostile}
    assert "AMQP header h is a int (5)" in by_body[b"h an int"].error
    assert all(letter.group == "g" for letter in letters)
    assert stream.queue.stats("g").pending == 0


def test_hostile_counts_and_ids_do_not_stop_a_valid_frame(stream: Stream) -> None:
    cases: list[tuple[dict[str, Any], str | None, int]] = [  # extra headers, message id, expected attempts
        ({"x-fb-attempts": "junk"}, "a", 1),
        ({"x-fb-attempts": -5}, "b", 1),
        ({"x-fb-attempts": 2**40}, "c", 1),
        ({"x-fb-attempts": True}, "d", 1),
        ({"x-fb-attempts": b"3"}, "e", 1),
        ({"x-fb-attempts": 3}, "f", 4),  # a delayed nack's republish carries its attempts: honoured
        ({"x-delivery-count": "junk"}, "g", 1),
        ({"x-delivery-count": -1, "x-fb-attempts": [1]}, "h", 1),
        ({"x-delivery-count": 2**62}, "i", 1),
        ({}, None, 1),
        ({}, "", 1),
    ]
    for seq, (extra, message_id, _attempts) in enumerate(cases):
        headers, body = stream.valid(seq, **extra)
        stream.publish_raw(headers, body, message_id=message_id)
    got, letters = stream.collect(len(cases), 0)
    assert letters == []
    assert sorted((d.frame.seq, d.attempts) for d in got) == [(i, c[2]) for i, c in enumerate(cases)]
    ids = {d.frame.seq: d.id for d in got}
    assert [ids[i] for i in range(9)] == list("abcdefghi")
    assert ids[9].startswith("tag-") and ids[10].startswith("tag-")


def test_a_wholly_hostile_batch_is_not_an_early_empty_return(stream: Stream) -> None:
    stream.queue.ensure_group("g")
    stream.publish_raw({"h": 1}, b"x")
    started = time.monotonic()
    assert stream.queue.consume("g", "c", count=10, block_ms=300) == []
    # A lower bound only (load can only lengthen it); block_ms is counted in whole milliseconds on the way.
    assert time.monotonic() - started >= 0.25, "consume gave up well before block_ms with nothing delivered"
    assert stream.queue.stats("g").dead_letters == 1


# -- the property: arbitrary messages interleaved with valid frames ---------------------------------------
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.binary(max_size=40),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
)
_amqp_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
_msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=10),
              st.binary(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_KEYS = ["v", "cam", "seq", "ts", "codec", "len", "sum", "sumk", "shape", "dtype", "meta"]
#: Headers that look like the service's: every key present or not, each with a value of any type.
_near_headers = st.dictionaries(st.sampled_from(_KEYS), _msgpack_values, max_size=len(_KEYS)).map(msgpack.packb)
_h = st.one_of(st.binary(max_size=100), _near_headers, _amqp_values)
_counts = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=5), st.binary(max_size=5), st.booleans())
_hostile_headers = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"h": _h, "x-fb-attempts": _counts, "x-delivery-count": _counts,
                                        "other": _amqp_values}),
)
_hostile = st.tuples(_hostile_headers, st.binary(max_size=200), st.one_of(st.none(), st.text(max_size=30)))
#: A message is either a valid frame (published by the backend) or a hostile one (raw pika).
_messages = st.lists(st.one_of(st.just("valid"), _hostile), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=_messages)
def test_arbitrary_messages_never_stop_consume(messages: list[Any]) -> None:
    stream = Stream()
    try:
        valid_seqs: list[int] = []
        hostile = 0
        for index, message in enumerate(messages):
            if message == "valid":
                stream.queue.publish(Frame("good", index, make_frames(1, shape=(2, 3))[0].data))
                valid_seqs.append(index)
            else:
                headers, body, message_id = message
                stream.publish_raw(headers, body, message_id=message_id)
                hostile += 1
        got, letters = stream.collect(len(valid_seqs), hostile)
        good = [d for d in got if d.frame.camera == "good"]
        assert sorted(d.frame.seq for d in good) == valid_seqs, "a valid frame lost or delivered twice"
        # A hostile message that happens to be a valid frame would be delivered, not dead-lettered.
        assert len(got) - len(good) + len(letters) == hostile
        assert all(letter.reason in REASONS and letter.error for letter in letters), letters
        stats = stream.queue.stats("g")
        assert (stats.pending, stats.lag, stats.dead_letters) == (0, 0, len(letters))
    finally:
        stream.close()


def test_foreign_messages_in_the_dead_letter_queue_are_listed(stream: Stream) -> None:
    # The broker dead-letters a foreign message with its own headers (the delivery-limit backstop), and anyone
    # may publish to the dead-letter queue: listing, replay and purge take whatever is there.
    dlq = f"{stream.name}:dlq"
    stream.queue.ensure_group("g")
    foreign: list[tuple[dict[str, Any] | None, str | None]] = [
        (None, None),
        ({"x-death": "junk", "x-fb-at-ms": "junk", "x-fb-attempts": "junk", "h": "text"}, "b"),
        ({"x-death": [1, 2], "x-fb-attempts": -1, "h": 7, "x-fb-reason": b"handler_error"}, "c"),
        ({"x-death": [{"time": "not a time"}], "x-first-death-reason": "rejected"}, "d"),
        ({"x-death": [{"time": datetime(2020, 1, 1, tzinfo=UTC)}], "x-first-death-queue": f"{stream.name}.g"}, "e"),
    ]
    for headers, message_id in foreign:
        stream.channel.basic_publish("", dlq, b"body", pika.BasicProperties(headers=headers, message_id=message_id))
    letters = stream.queue.dead_letters()
    assert [x.id for x in letters] == ["", "b", "c", "d", "e"]
    assert [x.attempts for x in letters] == [0, 0, 0, 0, 0]
    assert [x.header for x in letters] == [None, b"text", None, None, None]
    assert [x.reason for x in letters] == ["", "", "handler_error", "rejected", ""]
    assert letters[4].dead_lettered_at_ms == 1_577_836_800_000 and letters[4].group == "g"
    assert stream.queue.dead_letters(after="") == letters[1:]
    assert stream.queue.dead_letters(count=2, after="zzz") == []
    assert stream.queue.purge_dead_letters(["", "c"]) == 1, "a letter without an id is not found by ''"
    assert stream.queue.replay_dead_letters(["e"]) == 1
    got, letters = stream.collect(0, 4)  # the replayed one has no header: dead-lettered again, with why
    assert got == [] and letters[-1].reason == "missing_header" and letters[-1].payload == b"body"
