"""The behaviour every FrameQueue backend must have. Runs once per backend (see ``BACKENDS``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest

from frame_buffer import metrics
from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue import BackpressureTimeout, Delivery, FrameQueue
from tests.conftest import QueueFactory
from tests.frames import make_frames, pattern

DEADLINE_S = 30.0


def drain(queue: FrameQueue, group: str, consumer: str, expected: int, count: int = 50) -> list[Delivery]:
    """Consume and ack until ``expected`` deliveries arrived (or fail after DEADLINE_S)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < expected:
        assert time.monotonic() < deadline, f"only {len(got)} of {expected} frames arrived"
        batch = queue.consume(group, consumer, count=count, block_ms=200)
        queue.ack(batch)
        got.extend(batch)
    return got


def test_frames_of_one_camera_arrive_in_order(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    frames = make_frames(300, cameras=3)
    for chunk in range(0, 300, 25):
        queue.publish_many(frames[chunk : chunk + 25])
    got = drain(queue, "g", "c1", 300)
    by_camera: dict[str, list[int]] = {}
    for delivery in got:
        by_camera.setdefault(delivery.frame.camera, []).append(delivery.frame.seq)
    assert by_camera == {f"cam{c}": list(range(100)) for c in range(3)}
    assert all(d.attempts == 1 for d in got)
    (fifth,) = [d for d in got if (d.frame.camera, d.frame.seq) == (frames[5].camera, frames[5].seq)]
    np.testing.assert_array_equal(fifth.frame.data, frames[5].data)


def test_consumers_of_one_group_share_frames_each_exactly_once(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    queue.publish_many(make_frames(300, cameras=2))
    workers = [make_queue() for _ in range(3)]
    seen: Counter[str] = Counter()
    per_consumer: Counter[str] = Counter()
    deadline = time.monotonic() + DEADLINE_S
    while sum(seen.values()) < 300:
        assert time.monotonic() < deadline
        for index, worker in enumerate(workers):
            batch = worker.consume("g", f"c{index}", count=20, block_ms=100)
            worker.ack(batch)
            seen.update(d.id for d in batch)
            per_consumer[f"c{index}"] += len(batch)
    assert len(seen) == 300 and set(seen.values()) == {1}, "a frame reached two consumers or none"
    assert all(per_consumer[f"c{i}"] > 0 for i in range(3)), per_consumer
    assert workers[0].consume("g", "c0", count=10, block_ms=0) == []


def test_every_group_sees_every_frame(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("analytics", "archive"))
    queue.publish_many(make_frames(120, cameras=4))
    for group in ("analytics", "archive"):
        got = drain(queue, group, "c", 120)
        assert sorted((d.frame.camera, d.frame.seq) for d in got) == sorted(
            (f"cam{i % 4}", i // 4) for i in range(120)
        )


def test_group_created_after_publishing_sees_held_frames(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.publish_many(make_frames(10))
    assert len(drain(queue, "late", "c", 10)) == 10


def test_killed_consumer_frames_reach_another_consumer(make_queue: QueueFactory, backend: str,
                                                        backend_url: str) -> None:
    queue = make_queue(groups=("g",), claim_min_idle_ms=300)
    queue.publish_many(make_frames(40))
    if backend == "memory":
        # The in-process backend cannot outlive a killed process; a consumer that takes a batch and
        # vanishes without acking is the same event from the queue's point of view.
        taken = [d.id for d in queue.consume("g", "doomed", count=15, block_ms=1000)]
    else:
        args = [sys.executable, "-m", "tests.queue.dying_consumer", backend, backend_url,
                queue.settings.stream, "g", "doomed", "15"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        taken = json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(taken) == 15
    survivor = make_queue(groups=("g",), claim_min_idle_ms=300)
    got = drain(survivor, "g", "survivor", 40)
    assert sorted(d.id for d in got) == sorted({d.id for d in got}), "duplicate delivery"
    reclaimed = [d for d in got if d.id in taken]
    assert len(reclaimed) == 15 and all(d.attempts == 2 for d in reclaimed)
    assert survivor.stats("g").pending == 0


def test_consumer_restarting_under_its_name_takes_back_its_pending_frames(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",), claim_min_idle_ms=60_000)
    queue.publish_many(make_frames(5))
    first = queue.consume("g", "worker-1", count=5, block_ms=1000)
    assert len(first) == 5
    queue.close()  # the first process is gone (its connection with it)
    restarted = make_queue(groups=("g",), claim_min_idle_ms=60_000)
    if hasattr(restarted, "_recovered"):
        restarted._recovered.clear()  # the memory backend is one instance: forget, as a new process would
    again = restarted.consume("g", "worker-1", count=10, block_ms=1000)
    assert [d.id for d in again] == [d.id for d in first]
    assert all(d.attempts == 2 for d in again)


def test_slow_consumer_blocks_publisher_and_nothing_unacked_is_trimmed(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",), max_lag=50, publish_timeout_s=0.3)
    queue.publish_many(make_frames(50))
    with pytest.raises(BackpressureTimeout):
        queue.publish(make_frames(1)[0])
    taken = queue.consume("g", "slow", count=20, block_ms=1000)
    assert len(taken) == 20
    with pytest.raises(BackpressureTimeout):  # delivered but unacked still counts
        queue.publish(make_frames(1)[0])
    queue.trim()
    assert queue.stats("g").depth == 50, "trimmed entries that were not acknowledged"
    queue.ack(taken)
    queue.publish_many(make_frames(20))
    queue.trim()
    stats = queue.stats("g")
    assert (stats.lag, stats.pending) == (50, 0)
    assert stats.depth >= 50


def test_publisher_waits_for_slow_consumer_and_loses_nothing(make_queue: QueueFactory) -> None:
    producer = make_queue(groups=("g",), max_lag=30, publish_timeout_s=DEADLINE_S)
    consumer = make_queue(groups=("g",), max_lag=30, publish_timeout_s=DEADLINE_S)
    frames = make_frames(300)
    max_depth = 0

    def publish() -> None:
        for frame in frames:
            producer.publish(frame)

    thread = threading.Thread(target=publish)
    thread.start()
    got: list[Delivery] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 300:
        assert time.monotonic() < deadline
        batch = consumer.consume("g", "slow", count=3, block_ms=200)
        max_depth = max(max_depth, consumer.stats("g").backlog)
        consumer.ack(batch)
        got.extend(batch)
    thread.join()
    assert [d.frame.seq for d in got] == list(range(300))
    assert max_depth <= 30 + 1, f"backlog reached {max_depth} with max_lag 30"


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("shape", [(480, 640, 3), (240, 320), (7,)])
def test_arrays_of_every_supported_dtype_round_trip(
    make_queue: QueueFactory, dtype: str, shape: tuple[int, ...]
) -> None:
    queue = make_queue(groups=("g",))
    array = pattern(3, shape, dtype)
    queue.publish(Frame("cam", 1, array, ts_ns=123, meta={"exposure": 1.5, "src": "x"}))
    (delivery,) = drain(queue, "g", "c", 1)
    assert delivery.frame.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(delivery.frame.data, array)
    assert (delivery.frame.ts_ns, delivery.frame.meta) == (123, {"exposure": 1.5, "src": "x"})


def test_non_contiguous_arrays_and_encoded_bytes_and_lz4_round_trip(make_queue: QueueFactory) -> None:
    queue = make_queue(codec=FrameCodec(compress=True), groups=("g",))
    strided = pattern(1, (64, 64, 3))[::2, ::3]
    flat = np.zeros((100, 100), dtype=np.uint16)  # compresses: sent as lz4
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    queue.publish_many([Frame("a", 0, strided), Frame("a", 1, flat), Frame("a", 2, jpeg)])
    got = drain(queue, "g", "c", 3)
    np.testing.assert_array_equal(got[0].frame.data, strided)
    np.testing.assert_array_equal(got[1].frame.data, flat)
    assert bytes(got[2].frame.data) == jpeg


def test_undecodable_entries_are_dead_lettered_and_consumer_keeps_going(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    counted_before = metrics.REGISTRY.get_sample_value("frame_queue_dead_lettered_total", {"reason": "truncated"})
    good = queue.codec.encode(make_frames(1)[0])
    queue.publish_encoded([
        ("cam0", EncodedFrame(b"\xc1not msgpack", b"x")),
        ("cam0", EncodedFrame(good.header, bytes(good.payload)[:-1])),
        ("cam0", good),
    ])
    got = drain(queue, "g", "c", 1)
    assert [d.frame.seq for d in got] == [0]
    letters = queue.dead_letters()
    assert [letter.reason for letter in letters] == ["bad_header", "truncated"]
    assert letters[1].header == good.header and letters[1].group == "g"
    stats = queue.stats("g")
    assert (stats.pending, stats.dead_letters) == (0, 2)
    counted = metrics.REGISTRY.get_sample_value("frame_queue_dead_lettered_total", {"reason": "truncated"})
    assert (counted or 0) - (counted_before or 0) == 1


def test_nack_redelivers_after_delay_then_dead_letters_at_the_limit(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",), max_deliveries=3, claim_min_idle_ms=5000)
    queue.publish(make_frames(1)[0])
    attempts = []
    deadline = time.monotonic() + DEADLINE_S
    while not queue.dead_letters():
        assert time.monotonic() < deadline
        for delivery in queue.consume("g", "c", count=1, block_ms=100):
            attempts.append(delivery.attempts)
            queue.nack(delivery, delay_s=0.05)
    assert attempts == [1, 2, 3]
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.attempts) == ("delivery_limit", 4)
    assert queue.stats("g").pending == 0


def test_handler_dead_letter_then_replay_once_and_purge(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    queue.publish_many(make_frames(3))
    batch = queue.consume("g", "c", count=3, block_ms=1000)
    queue.dead_letter(batch[0], "handler_error", "ValueError: bad frame")
    queue.dead_letter(batch[1], "handler_error", "ValueError: worse frame")
    queue.ack(batch[2:])
    letters = queue.dead_letters()
    assert [(x.original_id, x.error) for x in letters] == [
        (batch[0].id, "ValueError: bad frame"), (batch[1].id, "ValueError: worse frame")]
    assert queue.dead_letters(after=letters[0].id) == letters[1:]
    assert queue.replay_dead_letters([letters[0].id, "999999-0"]) == 1
    assert queue.replay_dead_letters([letters[0].id]) == 0, "replayed twice"
    (replayed,) = drain(queue, "g", "c", 1)
    assert replayed.frame.seq == batch[0].frame.seq
    assert queue.purge_dead_letters([]) == 0
    assert queue.purge_dead_letters([letters[1].id]) == 1
    queue.dead_letter(replayed, "handler_error")
    assert queue.purge_dead_letters() == 1
    assert queue.dead_letters() == []


def test_stats_count_lag_pending_and_oldest_pending(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    assert queue.stats("nobody").depth == 0
    queue.publish_many(make_frames(10))
    assert (queue.stats("g").lag, queue.stats("g").pending) == (10, 0)
    assert queue.stats("unknown").lag == 10
    batch = queue.consume("g", "c", count=4, block_ms=1000)
    stats = queue.stats("g")
    assert (stats.depth, stats.lag, stats.pending, stats.backlog) == (10, 6, 4, 10)
    assert stats.oldest_pending_ms >= 0
    queue.ack(batch)
    queue.trim()
    stats = queue.stats("g")
    assert (stats.depth, stats.lag, stats.pending) == (6, 6, 0)


def test_shard_stats_add_up_to_the_stats_and_dead_letters_are_named(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    queue.publish_many(make_frames(12, cameras=6))
    queue.dead_letter(drain(queue, "g", "c", 12)[0], "handler_error")
    each, total = queue.shard_stats("g"), queue.stats("g")
    assert sum(s.depth for s in each) == total.depth and sum(s.dead_letters for s in each) == total.dead_letters == 1
    assert queue.settings.stream in queue.dead_letter_name


def test_empty_publish_and_empty_consume(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    assert queue.publish_many([]) == []
    assert queue.consume("g", "c", count=5, block_ms=50) == []
    queue.ack([])


def test_publish_without_any_group_keeps_frames_bounded_by_max_lag(make_queue: QueueFactory) -> None:
    queue = make_queue(max_lag=5, publish_timeout_s=0.2)
    queue.publish_many(make_frames(5))
    with pytest.raises(BackpressureTimeout):
        queue.publish(make_frames(1)[0])
    assert len(drain(queue, "first", "c", 5)) == 5


#: Dead-letter ids from outside (the CLI, an operator, a script): none is an id of any backend's dead letter.
HOSTILE_IDS = [
    "not-an-id", "", "1-2-3", "99999999999999999999999-0", "18446744073709551616-0", "-1-0", " 1-0", "1-0\n",
    "\uff11-0", "0-0", "18446744073709551615-18446744073709551615", "1", "1-", "-0", "1-0 ", "\x00", "x" * 10_000,
]


def test_hostile_dead_letter_ids_count_as_not_found(make_queue: QueueFactory) -> None:
    queue = make_queue(groups=("g",))
    queue.publish_many(make_frames(2))
    batch = queue.consume("g", "c", count=2, block_ms=1000)
    for delivery in batch:
        queue.dead_letter(delivery, "handler_error")
    first, second = queue.dead_letters()
    assert first.dead_lettered_at_ms > 1_600_000_000_000 and first.attempts == 1
    assert queue.replay_dead_letters(HOSTILE_IDS) == 0
    assert queue.purge_dead_letters(HOSTILE_IDS) == 0
    assert queue.dead_letters() == [first, second]
    assert queue.replay_dead_letters([*HOSTILE_IDS, first.id]) == 1
    assert queue.purge_dead_letters([*HOSTILE_IDS, second.id, second.id]) == 1
    assert queue.stats("g").dead_letters == 0
    assert [d.frame.seq for d in drain(queue, "g", "c", 1)] == [batch[0].frame.seq]
