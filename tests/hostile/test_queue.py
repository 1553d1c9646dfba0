"""``FrameQueue.consume`` in-process against hostile entries XADDed raw into a real Redis stream (many examples),
and the dead-lettering of an entry that makes the codec itself fail (a bug)."""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frame_buffer import metrics
from frame_buffer.codec import FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue import Delivery, QueueSettings
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from tests.conftest import REDIS_URL, QueueFactory
from tests.frames import make_frames
from tests.hostile.entries import batches
from tests.hostile.streams import DeadLetters, write

DEADLINE_S = 30.0


def test_consume_delivers_every_valid_frame_once_and_dead_letters_the_rest(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    queue = RedisStreamsQueue(REDIS_URL, QueueSettings(stream=stream_name, groups=("g",)))
    letters = DeadLetters(client, stream_name)
    examples = itertools.count()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def example(data: st.DataObject) -> None:
        prefix = f"q{next(examples):06d}"  # one length: a replayed example draws the same
        written = write(client, stream_name, data.draw(batches(prefix), label="entries"))
        wanted = Counter((e.camera, e.seq) for e in written.values() if e.expected is None)
        invalid = [entry_id for entry_id, e in written.items() if e.expected is not None]
        got: list[Delivery] = []
        deadline = time.monotonic() + DEADLINE_S
        while sum(wanted.values()) > len(got) or not letters.holds(invalid):
            assert time.monotonic() < deadline, f"{prefix}: {len(got)} frames delivered of {wanted}"
            batch = queue.consume("g", "c", count=16, block_ms=20)
            queue.ack(batch)
            got.extend(batch)
        assert Counter((d.frame.camera, d.frame.seq) for d in got) == wanted, "each valid frame exactly once"
        letters.check(written)
        assert client.xpending(stream_name, "g")["pending"] == 0

    try:
        example()
        assert queue.consume("g", "c", block_ms=0) == [], "nothing left over"
    finally:
        queue.close()
        client.delete(stream_name, f"{stream_name}:dlq")
        client.close()


class BuggyCodec(FrameCodec):
    """A codec with a bug for one camera. A fake on purpose: decoding is total, so a real codec cannot be made
    to raise anything but CodecError from stream content; this stands in for a bug that is not known yet."""

    def decode(self, header: bytes | None, payload: bytes | memoryview | None) -> Frame:
        frame = super().decode(header, payload)
        if frame.camera == "boom":
            raise RuntimeError("a bug in decode")
        return frame


@pytest.mark.parametrize("backend", ["memory", "redis", "rabbitmq"])
def test_a_decode_bug_dead_letters_the_entry_logs_it_and_consumption_goes_on(
    make_queue: QueueFactory, caplog: pytest.LogCaptureFixture
) -> None:
    queue = make_queue(codec=BuggyCodec(), groups=("g",))
    before = metrics.REGISTRY.get_sample_value("frame_queue_dead_lettered_total", {"reason": "decode_error"}) or 0
    good = make_frames(2)
    queue.publish_many([good[0], Frame("boom", 0, b"x"), good[1]])
    got: list[Delivery] = []
    deadline = time.monotonic() + DEADLINE_S
    with caplog.at_level(logging.ERROR, logger="frame_buffer.queue"):
        while len(got) < 2 or queue.stats("g").dead_letters < 1:
            assert time.monotonic() < deadline, f"only {len(got)} frames arrived"
            batch = queue.consume("g", "c", block_ms=200)
            queue.ack(batch)
            got.extend(batch)
    assert [(d.frame.camera, d.frame.seq) for d in got] == [("cam0", 0), ("cam0", 1)]
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.error) == ("decode_error", "RuntimeError: a bug in decode")
    assert letter.payload == b"x"
    (record,) = [r for r in caplog.records if r.name == "frame_buffer.queue"]
    assert record.exc_info is not None and "dead-lettered as decode_error" in record.getMessage()
    assert queue.stats("g").pending == 0
    after = metrics.REGISTRY.get_sample_value("frame_queue_dead_lettered_total", {"reason": "decode_error"})
    assert after == before + 1
