"""The redis backend with payloads in shared memory (FRAME_BUFFER_PAYLOAD_STORE=shm, issue 18): against the
shared Redis on its own streams, producers in real processes where a failure is the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from frame_buffer.codec import PayloadRef, decode_ref, encode_ref
from frame_buffer.frame import Frame
from frame_buffer.payload_store.layout import slot_bytes
from frame_buffer.queue import BackpressureTimeout, Delivery, QueueSettings, RedisOptions, StreamWrongType, open_queue
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from frame_buffer.queue.redis_streams.shm import ShmStreamsQueue
from tests.conftest import REDIS_URL
from tests.payload_store.conftest import shm_root  # noqa: F401 - the fixture
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0
ShmFactory = Callable[..., ShmStreamsQueue]


@pytest.fixture
def make_shm(shm_root: Path, stream_name: str) -> Iterator[ShmFactory]:  # noqa: F811
    """Open shm queues on one stream, their store under ``shm_root``; cleaned up afterwards."""
    opened: list[ShmStreamsQueue] = []

    def make(store_bytes: int = 64 << 20, **overrides: object) -> ShmStreamsQueue:
        settings = QueueSettings(stream=stream_name, payload_store="shm", shm_dir=str(shm_root), shm_bytes=store_bytes,
                                 **overrides)  # type: ignore[arg-type]
        queue = ShmStreamsQueue(REDIS_URL, settings)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(stream_name, f"{stream_name}:dlq")
    client.close()


def image(seq: int, nbytes: int = 100_000) -> np.ndarray:
    return np.full(nbytes, seq % 251, np.uint8)


def take(queue: ShmStreamsQueue, group: str, expected: int, ack: bool = True) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < expected:
        assert time.monotonic() < deadline, f"only {len(got)} of {expected} frames arrived"
        batch = queue.consume(group, "c1", count=expected - len(got), block_ms=200)
        if ack:
            queue.ack(batch)
        got.extend(batch)
    return got


def producer(stream: str, shm_dir: Path, count: int, *, then: str = "exit", shm_bytes: int = 64 << 20,
             nbytes: int = 100_000) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}{os.pathsep}{ROOT}"}
    args = [REDIS_URL, stream, str(shm_dir), str(shm_bytes), str(count), str(nbytes), then]
    return subprocess.Popen([sys.executable, "-m", "tests.queue.shm_producer", *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_full_hd_frames_arrive_as_read_only_views_of_the_shared_memory(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(groups=("g",)), make_shm()
    frames = [np.random.default_rng(seq).integers(0, 255, (1080, 1920, 3), np.uint8) for seq in range(3)]
    publisher.publish_many([Frame("cam", seq, pixels) for seq, pixels in enumerate(frames)])
    fields = publisher.client.xrange(publisher.settings.stream)[0][1]
    assert set(fields) == {b"h", b"r"}, "the entry carries the header and a reference, not the payload"
    got = take(consumer, "g", 3)
    (mapping,) = consumer._reader._maps.values()
    start = np.frombuffer(mapping, np.uint8).ctypes.data
    for delivery, pixels in zip(got, frames, strict=True):
        assert not delivery.frame.data.flags.writeable
        assert start <= delivery.frame.data.ctypes.data < start + len(mapping), "not a view of the store: a copy"
        np.testing.assert_array_equal(delivery.frame.data, pixels)


def test_a_frame_rendered_in_a_reserved_slot_is_published_without_a_copy(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(groups=("g",)), make_shm()
    reservation = publisher.reserve(480 * 640 * 3)
    pixels = reservation.array((480, 640, 3), np.uint8)
    pixels[:] = 9
    publisher.publish(Frame("cam", 0, pixels))
    assert publisher.writer.used_bytes == slot_bytes(480 * 640 * 3), "one slot: the frame was not copied"
    (delivery,) = take(consumer, "g", 1)
    assert delivery.frame.data.shape == (480, 640, 3) and int(delivery.frame.data.max()) == 9
    spare = publisher.reserve(100)
    publisher.cancel(spare)  # a dropped frame gives its slot back
    assert publisher.writer.live_slots == 1


def test_slots_are_released_only_once_every_group_acked_or_dead_lettered(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(groups=("a", "b")), make_shm()
    publisher.publish_many([Frame("cam", seq, image(seq)) for seq in range(6)])
    in_a = take(consumer, "a", 6, ack=False)
    consumer.ack(in_a[:4])
    take(consumer, "b", 6)
    publisher.trim()
    assert publisher.writer.live_slots == 2, "group a still holds the last two"
    consumer.dead_letter(in_a[4], "handler_error", "boom")
    publisher.trim()
    assert publisher.writer.live_slots == 1
    (letter,) = consumer.dead_letters()
    assert letter.payload == image(4).tobytes(), "a dead letter keeps the payload itself, not the reference"
    consumer.ack(in_a[5:])
    publisher.trim()
    assert publisher.writer.live_slots == 0


def test_a_full_store_is_backpressure_until_consumers_ack(make_shm: ShmFactory) -> None:
    size = 400_000
    publisher = make_shm(store_bytes=3 * slot_bytes(size), groups=("g",), publish_timeout_s=0.3)
    consumer = make_shm()
    publisher.publish_many([Frame("cam", seq, image(seq, size)) for seq in range(3)])
    with pytest.raises(BackpressureTimeout, match=f"no room for {size} bytes"):
        publisher.publish(Frame("cam", 3, image(3, size)))
    assert publisher.writer.live_slots == 3, "the refused frame left nothing behind"
    take(consumer, "g", 3)
    publisher.publish(Frame("cam", 3, image(3, size)))
    (delivery,) = take(consumer, "g", 1)
    assert delivery.frame.seq == 3 and int(delivery.frame.data[0]) == 3


def test_a_failed_publish_frees_copied_slots_and_reopens_a_reserved_one(make_shm: ShmFactory) -> None:
    publisher = make_shm()
    publisher.client.set(publisher.settings.stream, "not a stream")
    with pytest.raises(StreamWrongType):
        publisher.publish(Frame("cam", 0, image(0)))
    assert publisher.writer.live_slots == 0
    reservation = publisher.reserve(1000)
    pixels = reservation.array((1000,), np.uint8)
    pixels[:] = 5
    with pytest.raises(StreamWrongType):
        publisher.publish(Frame("cam", 1, pixels))
    assert publisher.writer.live_slots == 1, "the frame still lives in its slot: kept for the retry"
    publisher.client.delete(publisher.settings.stream)
    publisher.ensure_group("g")
    publisher.publish(Frame("cam", 1, pixels))
    assert publisher.writer.used_bytes == slot_bytes(1000)
    (delivery,) = take(make_shm(), "g", 1)
    assert int(delivery.frame.data.max()) == 5


def test_hostile_references_are_dead_lettered_and_the_consumer_keeps_going(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(groups=("g",)), make_shm()
    stream = publisher.settings.stream
    header = msgpack.packb({"v": 1, "cam": "x", "seq": 0, "ts": 0, "codec": "bytes", "len": 3, "sum": 0,
                            "sumk": "none"})
    missing = encode_ref(PayloadRef("seg-0000000000000000", 0, 3, 1))
    for ref in (b"junk", msgpack.packb(["../../../etc/passwd", 0, 3, 1]), missing):
        publisher.client.xadd(stream, {"h": header, "r": ref})
    publisher.client.xadd(stream, {"h": header, "p": b"abc"})  # an inline entry is read as one
    publisher.publish(Frame("cam", 7, image(7)))
    got = take(consumer, "g", 2)
    assert [bytes(d.frame.data) if d.frame.camera == "x" else d.frame.seq for d in got] == [b"abc", 7]
    reasons = [letter.reason for letter in consumer.dead_letters()]
    assert reasons == ["bad_reference", "bad_reference", "payload_lost"]


def test_open_queue_chooses_the_store_only_when_asked(shm_root: Path, stream_name: str) -> None:  # noqa: F811
    inline = open_queue("redis", redis_url=REDIS_URL, settings=QueueSettings(stream=stream_name))
    assert type(inline) is RedisStreamsQueue
    inline.close()
    settings = QueueSettings(stream=stream_name, payload_store="shm", shm_dir=str(shm_root), shm_bytes=1 << 20)
    shm = open_queue("redis", redis_url=REDIS_URL, settings=settings)
    assert type(shm) is ShmStreamsQueue and shm.store_directory == shm_root / stream_name
    assert shm.store_bytes == 1 << 20
    shm.close()
    with pytest.raises(ValueError, match="one stream on one Redis server"):
        open_queue("redis", redis_url=REDIS_URL, settings=settings, redis_options=RedisOptions(shards=4))
    with pytest.raises(ValueError, match="shm_dir: must be an absolute path, got 'here'"):
        QueueSettings(shm_dir="here")


# -- failures with real processes -----------------------------------------------------------------------------
def test_a_killed_producers_committed_frames_stay_readable(make_shm: ShmFactory, shm_root: Path) -> None:  # noqa: F811
    consumer = make_shm(groups=("g",))
    stream = consumer.settings.stream
    store_dir = shm_root / stream
    child = producer(stream, shm_root, 5, then="hold")
    assert child.stdout is not None
    ids = [child.stdout.readline().strip() for _ in range(5)]
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    got = take(consumer, "g", 5)
    assert [d.id for d in got] == ids
    assert [int(d.frame.data[0]) for d in got] == [0, 1, 2, 3, 4]
    (old_segment,) = [p.name for p in store_dir.glob("seg-*")]
    successor = make_shm()  # the kernel released the dead producer's lock
    successor.publish(Frame("cam", 5, image(5)))
    take(consumer, "g", 1)
    successor.trim()
    assert old_segment not in [p.name for p in store_dir.glob("seg-*")], "released once every group was done"


def test_deleted_segment_files_are_payload_lost_and_the_consumer_keeps_going(
    make_shm: ShmFactory, shm_root: Path  # noqa: F811
) -> None:
    consumer = make_shm(groups=("g",))
    child = producer(consumer.settings.stream, shm_root, 4)
    assert child.wait() == 0
    segments = list((shm_root / consumer.settings.stream).glob("seg-*"))
    assert len(segments) == 1
    for path in segments:
        path.unlink()  # a reboot, or the tmpfs emptied: Redis still holds the references
    make_shm().publish(Frame("cam", 9, image(9)))
    (delivery,) = take(consumer, "g", 1)
    assert delivery.frame.seq == 9
    assert [letter.reason for letter in consumer.dead_letters()] == ["payload_lost"] * 4


def test_a_slow_consumer_holding_views_never_sees_them_overwritten(make_shm: ShmFactory, shm_root: Path) -> None:  # noqa: F811
    """Group ``slow`` holds batches of views unacked while the producer (another process) publishes as fast as
    the store lets it and group ``fast`` acks everything: the store fills, the producer waits, and every held
    view keeps its frame's pixels until it is acked."""
    consumer = make_shm(groups=("slow", "fast"))
    total = 120
    child = producer(consumer.settings.stream, shm_root, total, shm_bytes=12 * slot_bytes(100_000))
    held: list[Delivery] = []
    slow_seen = fast_seen = 0
    deadline = time.monotonic() + DEADLINE_S
    while slow_seen < total or fast_seen < total:
        assert time.monotonic() < deadline, f"slow {slow_seen}, fast {fast_seen} of {total}"
        for delivery in held:
            assert np.all(delivery.frame.data == delivery.frame.seq % 251), f"frame {delivery.frame.seq} changed"
        fast = consumer.consume("fast", "c1", count=50, block_ms=100)
        for delivery in fast:
            assert np.all(delivery.frame.data == delivery.frame.seq % 251)
        consumer.ack(fast)
        fast_seen += len(fast)
        if not fast:  # the producer waits for the slow group: let go of its batch, take the next
            for delivery in held:
                assert np.all(delivery.frame.data == delivery.frame.seq % 251)
            consumer.ack(held)
            held = consumer.consume("slow", "c1", count=5, block_ms=100)
            slow_seen += len(held)
    assert child.wait() == 0


def test_deleting_the_streams_keys_deletes_its_store(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(groups=("g",)), make_shm()
    publisher.publish(Frame("cam", 0, image(0)))
    assert list(publisher.store_directory.glob("seg-*"))
    assert publisher.delete_keys() == 1
    assert not publisher.store_directory.exists()
    assert consumer.delete_keys() == 0  # nothing left, and no writer of its own
    publisher.publish(Frame("cam", 1, image(1)))  # a new store, as for a new stream
    assert [d.frame.seq for d in take(consumer, "late", 1)] == [1]


def test_without_a_group_nothing_is_released_and_a_consumer_takes_no_lock(make_shm: ShmFactory) -> None:
    publisher, consumer = make_shm(), make_shm()
    publisher.publish_many([Frame("cam", seq, image(seq)) for seq in range(2)])
    publisher.trim()
    assert publisher.writer.live_slots == 2, "kept for the first group to come"
    consumer.trim()  # no writer in this instance: nothing to release, and no lock taken
    assert consumer._writer is None
    assert [d.frame.seq for d in take(consumer, "late", 2)] == [0, 1]
    consumer.trim()  # a group now: the trim answers the id still needed, and still no store to release
    assert consumer._writer is None
    publisher.trim()
    assert publisher.writer.live_slots == 0


def test_a_killed_consumers_slots_are_released_once_its_entries_are_reclaimed_and_acked(
    make_shm: ShmFactory, shm_root: Path  # noqa: F811
) -> None:
    publisher = make_shm(groups=("g",))
    publisher.publish_many([Frame("cam", seq, image(seq)) for seq in range(3)])
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}{os.pathsep}{ROOT}"}
    args = [REDIS_URL, publisher.settings.stream, str(shm_root), "g", "3"]
    child = subprocess.Popen([sys.executable, "-m", "tests.queue.shm_consumer", *args], cwd=ROOT, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    held = json.loads(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    publisher.trim()
    assert publisher.writer.live_slots == 3, "pending in the dead consumer: still needed"
    rescuer = make_shm(claim_min_idle_ms=50)
    got = take(rescuer, "g", 3)  # reclaimed once idle 50 ms, then acked
    assert sorted(d.id for d in got) == sorted(held)
    assert [int(d.frame.data[0]) for d in sorted(got, key=lambda d: d.frame.seq)] == [0, 1, 2]
    publisher.trim()
    assert publisher.writer.live_slots == 0


# -- hostile references against a live store: never another slot's pixels -------------------------------------
@pytest.fixture
def store_with_three(make_shm: ShmFactory) -> tuple[ShmStreamsQueue, ShmStreamsQueue, dict[PayloadRef, bytes]]:
    """A publisher, a consumer, and the references (with their headers) of three frames delivered, never acked
    (and never reclaimed: the store keeps them for the whole test)."""
    publisher, consumer = make_shm(groups=("g",)), make_shm(claim_min_idle_ms=3_600_000)
    publisher.publish_many([Frame("cam", seq, image(seq, 1000 + seq * 64)) for seq in range(3)])
    take(consumer, "g", 3, ack=False)
    entries = publisher.client.xrange(publisher.settings.stream)
    return publisher, consumer, {decode_ref(fields[b"r"]): fields[b"h"] for _id, fields in entries}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_forged_reference_yields_its_own_slots_pixels_or_nothing(
    store_with_three: tuple[ShmStreamsQueue, ShmStreamsQueue, dict[PayloadRef, bytes]], data: st.DataObject
) -> None:
    publisher, consumer, real = store_with_three
    ordered = sorted(real, key=lambda r: r.offset)
    base = data.draw(st.sampled_from(ordered))
    forged = PayloadRef(
        data.draw(st.sampled_from([base.segment, "seg-0123456789abcdef"])),
        max(0, base.offset + 64 * data.draw(st.integers(-20, 20))),
        max(0, base.length + data.draw(st.sampled_from([0, 0, 1, -1, 64, -64, 10**6]))),
        max(1, base.generation + data.draw(st.integers(-2, 2))),
    )
    header = real[data.draw(st.sampled_from(ordered))]
    entry_id = publisher.client.xadd(publisher.settings.stream, {"h": header, "r": encode_ref(forged)}).decode()
    got = consumer.consume("g", "c1", count=1, block_ms=0)
    consumer.ack(got)
    event("delivered" if got else "dead-lettered")
    if got:
        (delivery,) = got
        assert delivery.id == entry_id
        assert forged in real and real[forged] == header, f"{forged} delivered, but no slot was committed as it"
        assert np.all(delivery.frame.data == delivery.frame.seq % 251)
    else:
        ((_id, letter),) = publisher.client.xrevrange(consumer.dead_letter_name, count=1)
        assert letter[b"original_id"].decode() == entry_id
        assert letter[b"reason"] in {b"payload_lost", b"bad_checksum", b"truncated", b"bad_length"}, letter


def test_redis_killed_with_aof_gives_back_the_references_and_the_payloads_are_still_there(
    redis_server: RedisServer, shm_root: Path, stream_name: str  # noqa: F811
) -> None:
    settings = QueueSettings(stream=stream_name, groups=("g",), payload_store="shm", shm_dir=str(shm_root),
                             shm_bytes=1 << 20)
    publisher = ShmStreamsQueue(redis_server.url, settings)
    publisher.publish_many([Frame("cam", seq, image(seq, 1000)) for seq in range(3)])
    redis_server.kill()  # SIGKILL; appendfsync always: every XADD that returned is in the AOF
    redis_server.start()
    consumer = ShmStreamsQueue(redis_server.url, settings)
    got = take(consumer, "g", 3)
    assert [(d.frame.seq, int(d.frame.data[0])) for d in got] == [(0, 0), (1, 1), (2, 2)]
    publisher.publish(Frame("cam", 3, image(3, 1000)))  # the producer lived through it: its ring goes on
    (after,) = take(consumer, "g", 1)
    assert int(after.frame.data[0]) == 3
    publisher.trim()
    assert publisher.writer.live_slots == 0
    publisher.close()
    consumer.close()
