"""Memory budget, adaptive capacity, spool ordering, and the backpressure policies at admission."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from frame_buffer import metrics
from frame_buffer.codec import FrameCodec
from frame_buffer.flow.backpressure import Admission, parse_policy
from frame_buffer.flow.buffer import (
    FRAME_OVERHEAD_BYTES,
    AdaptiveBuffer,
    FrameOverBudget,
    Item,
    MemoryBudget,
    item_cost,
)
from frame_buffer.flow.spool import Spool
from frame_buffer.frame import Frame
from frame_buffer.queue import BackpressureTimeout

CODEC = FrameCodec()


def item(seq: int, nbytes: int = 1000, camera: str = "cam") -> Item:
    return camera, CODEC.encode(Frame(camera, seq, np.zeros(nbytes, dtype=np.uint8)))


def seqs(items: list[tuple[Item, int]]) -> list[int]:
    return [int(CODEC.decode(encoded.header, encoded.payload).seq) for (_, encoded), _ in items]


def setup(policy: str, budget: int = 100_000, capacity: int = 100) -> tuple[Admission, AdaptiveBuffer, Spool]:
    mem = MemoryBudget(budget)
    buffer = AdaptiveBuffer(mem, capacity, capacity)
    spool = Spool(mem)
    return Admission(policy, buffer, spool, threading.Condition(), lambda: False), buffer, spool


def test_budget_tracks_use_and_peak_and_refuses_overdraft() -> None:
    budget = MemoryBudget(1000)
    budget.reserve(600)
    assert budget.fits(400) and not budget.fits(401)
    with pytest.raises(FrameOverBudget):
        budget.reserve(401)
    budget.release(600)
    assert (budget.used, budget.peak) == (0, 600)
    assert metrics.REGISTRY.get_sample_value("frame_queue_buffer_budget_bytes") == 1000


def test_capacity_follows_the_drain_rate_within_bounds() -> None:
    buffer = AdaptiveBuffer(MemoryBudget(10**9), 100, 10_000, horizon_s=1.0, smoothing=1.0)
    assert buffer.capacity == 100
    buffer.record_drain(32, 0.01)  # 3200 frames/s
    assert buffer.capacity == 3200
    buffer.record_drain(32, 0.0001)
    assert buffer.capacity == 10_000
    buffer.record_drain(1, 1.0)  # the backend slowed to 1 frame/s
    assert buffer.capacity == 100
    assert metrics.REGISTRY.get_sample_value("frame_queue_buffer_capacity_frames") == 100


def test_capacity_never_promises_more_frames_than_the_budget_holds() -> None:
    one = item_cost(item(0, 10_000))
    buffer = AdaptiveBuffer(MemoryBudget(one * 500), 100, 10_000, smoothing=1.0)
    buffer.append(item(0, 10_000), one)
    buffer.record_drain(1000, 0.01)
    assert buffer.capacity == 500


def test_block_waits_then_raises_and_the_frame_is_not_taken() -> None:
    admission, buffer, _ = setup("block", capacity=2)
    with admission.cond:
        assert admission.admit(item(0), 1) and admission.admit(item(1), 1)
        with pytest.raises(BackpressureTimeout, match="buffer 2/2"):
            admission.admit(item(2), 0.05)
    assert len(buffer) == 2 and admission.dropped == {}


def test_block_resumes_when_the_publisher_frees_room() -> None:
    admission, buffer, _ = setup("block", capacity=1)
    with admission.cond:
        admission.admit(item(0), 1)

    def drain() -> None:
        with admission.cond:
            for (_, _), cost in buffer.take(1):
                buffer.budget.release(cost)
            admission.cond.notify_all()

    timer = threading.Timer(0.05, drain)
    timer.start()
    with admission.cond:
        assert admission.admit(item(1), 5)
    timer.join()
    assert seqs(buffer.take(5)) == [1]


def test_drop_newest_keeps_the_old_frames() -> None:
    admission, buffer, _ = setup("drop_newest", capacity=3)
    before = metrics.REGISTRY.get_sample_value("frame_queue_dropped_total", {"reason": "drop_newest"}) or 0
    with admission.cond:
        results = [admission.admit(item(i), 1) for i in range(5)]
    assert results == [True, True, True, False, False]
    assert seqs(buffer.take(10)) == [0, 1, 2]
    assert admission.dropped == {"drop_newest": 2}
    assert metrics.REGISTRY.get_sample_value("frame_queue_dropped_total", {"reason": "drop_newest"}) == before + 2


def test_drop_oldest_keeps_the_fresh_frames() -> None:
    admission, buffer, _ = setup("drop_oldest", capacity=3)
    with admission.cond:
        assert all(admission.admit(item(i), 1) for i in range(5))
    assert seqs(buffer.take(10)) == [2, 3, 4]
    assert admission.dropped == {"drop_oldest": 2}


def test_a_full_spool_is_counted_as_spool_full() -> None:
    cost = item_cost(item(0))
    admission, buffer, spool = setup("drop_oldest", budget=cost * 4, capacity=100)
    with admission.cond:
        for i in range(4):
            admission.admit(item(i), 1)
        spool.push_back(buffer.take(4))  # the breaker opened: everything went to the spool
        assert admission.admit(item(4), 1)
    assert admission.dropped == {"spool_full": 1}
    assert seqs(list(spool.items())) == [1, 2, 3] and seqs(list(buffer.items())) == [4]
    admission.policy = parse_policy("drop_newest")
    with admission.cond:
        spool.push_back(buffer.take(4))
        assert not admission.admit(item(5), 1)
    assert admission.dropped == {"spool_full": 2}
    assert seqs(list(spool.items())) == [1, 2, 3, 4]


def test_spool_replays_in_order_with_failed_batches_put_back_first() -> None:
    budget = MemoryBudget(10**6)
    buffer = AdaptiveBuffer(budget)
    spool = Spool(budget)
    for i in range(10):
        buffer.append(item(i), item_cost(item(i)))
    batch = buffer.take(3)  # being published when the backend died
    spool.push_back(buffer.take(4))
    spool.push_front(batch)
    assert len(spool) == 7 and metrics.REGISTRY.get_sample_value("frame_queue_spool_frames") == 7
    assert seqs(spool.take(100)) + seqs(buffer.take(100)) == list(range(10))


def test_the_budget_holds_whatever_the_frame_sizes() -> None:
    rng = random.Random(7)
    budget_bytes = 200_000
    for policy in ("drop_oldest", "drop_newest"):
        admission, buffer, spool = setup(policy, budget=budget_bytes, capacity=10_000)
        with admission.cond:
            for i in range(2000):
                admission.admit(item(i, rng.choice((10, 1000, 50_000, 150_000))), 1)
                assert buffer.budget.used <= budget_bytes
                if i % 50 == 0:
                    spool.push_back(buffer.take(len(buffer)))
        assert buffer.budget.peak <= budget_bytes
        assert buffer.budget.used == buffer.bytes + spool.bytes


def test_a_frame_larger_than_the_budget_is_refused() -> None:
    admission, _, _ = setup("block", budget=5000)
    with admission.cond, pytest.raises(FrameOverBudget):
        admission.admit(item(0, 5000 - FRAME_OVERHEAD_BYTES), 1)


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="block, drop_oldest, drop_newest"):
        parse_policy("drop_random")
