"""Worker on the real backends: retries with backoff, dead letters, finishing the batch in hand."""

from __future__ import annotations

import threading
from collections.abc import Callable

from frame_buffer import metrics
from frame_buffer.flow import CircuitBreaker, ConstantBackoff, RetryPolicy, Worker
from frame_buffer.frame import Frame
from frame_buffer.queue import FrameQueue, QueueSettings
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from tests.conftest import QueueFactory
from tests.frames import make_frames
from tests.servers import RedisServer, wait_until

FAST_RETRY = RetryPolicy(base_s=0.001, cap_s=0.01, max_attempts=3)


def start(worker: Worker) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    return stop, thread


def opener(make_queue: QueueFactory) -> Callable[[], FrameQueue]:
    return lambda: make_queue(groups=("g",), claim_min_idle_ms=40)


def test_a_failing_frame_is_retried_then_dead_lettered(make_queue: QueueFactory) -> None:
    open_queue = opener(make_queue)
    queue = open_queue()
    ids = queue.publish_many(make_frames(10))
    handled: list[int] = []

    def handler(frame: Frame) -> None:
        handled.append(frame.seq)
        if frame.seq == 3:
            raise RuntimeError("cannot analyse frame 3")

    before = metrics.REGISTRY.get_sample_value("frame_queue_dead_lettered_total", {"reason": "handler_error"}) or 0
    worker = Worker(open_queue, "g", "w1", handler, retry=FAST_RETRY)
    stop, thread = start(worker)
    try:
        wait_until(lambda: queue.stats("g").dead_letters == 1 and worker.acked == 9, 20, "the dead letter")
    finally:
        stop.set()
        thread.join()
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.attempts, letter.original_id) == ("handler_error", 3, ids[3])
    assert "RuntimeError: cannot analyse frame 3" in letter.error
    assert handled.count(3) == 3 and sorted(set(handled)) == list(range(10))
    assert worker.summary() == {"consumed": 12, "acked": 9, "redelivered": 2, "dead_lettered": 1,
                                "handler_errors": 3}
    assert queue.stats("g").pending == 0
    assert metrics.REGISTRY.get_sample_value(
        "frame_queue_dead_lettered_total", {"reason": "handler_error"}) == before + 1


def test_a_transient_failure_recovers_on_retry(make_queue: QueueFactory) -> None:
    open_queue = opener(make_queue)
    queue = open_queue()
    queue.publish_many(make_frames(10))
    failed: set[int] = set()
    done: list[int] = []

    def handler(frame: Frame) -> None:
        if frame.seq % 4 == 0 and frame.seq not in failed:
            failed.add(frame.seq)
            raise TimeoutError("model server busy")
        done.append(frame.seq)

    worker = Worker(open_queue, "g", "w1", handler, retry=FAST_RETRY)
    stop, thread = start(worker)
    try:
        wait_until(lambda: worker.acked == 10, 20, "all frames acked")
    finally:
        stop.set()
        thread.join()
    assert sorted(done) == list(range(10))
    assert worker.summary()["redelivered"] == 3 and queue.stats("g").dead_letters == 0


def test_stop_finishes_and_acks_the_batch_in_hand(make_queue: QueueFactory) -> None:
    open_queue = opener(make_queue)
    queue = open_queue()
    queue.publish_many(make_frames(10))
    stop = threading.Event()
    seen: list[int] = []

    def handler(frame: Frame) -> None:
        seen.append(frame.seq)
        stop.set()  # asked to stop during the first frame of the batch

    worker = Worker(open_queue, "g", "w1", handler, batch=10)
    worker.run(stop)
    assert seen == list(range(10))
    assert worker.summary()["acked"] == 10
    stats = queue.stats("g")
    assert stats.pending == 0 and stats.lag == 0


def test_a_worker_rides_through_a_redis_restart(redis_server: RedisServer) -> None:
    settings = QueueSettings(groups=("g",))
    open_queue = lambda: RedisStreamsQueue(redis_server.url, settings, max_block_ms=200)  # noqa: E731
    publisher = open_queue()
    publisher.publish_many(make_frames(5))
    seen: list[int] = []
    breaker = CircuitBreaker("worker w1", failure_threshold=1, cooldown=ConstantBackoff(0.05),
                             export_metrics=False)
    worker = Worker(open_queue, "g", "w1", lambda frame: seen.append(frame.seq), block_ms=100, breaker=breaker)
    stop, thread = start(worker)
    try:
        wait_until(lambda: len(seen) == 5, 10, "the first frames")
        redis_server.kill()
        wait_until(lambda: breaker.transitions["open"] >= 1, 10, "the worker's breaker to open")
        redis_server.start()  # AOF: the stream and the group come back
        open_queue().publish_many(make_frames(10)[5:])
        wait_until(lambda: set(seen) >= set(range(10)), 20, "every frame, those published after the restart included")
    finally:
        stop.set()
        thread.join()
    assert set(seen) == set(range(10)) and thread.is_alive() is False
    assert breaker.state == "closed"
