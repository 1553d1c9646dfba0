"""``frame_queue_stage_seconds``: every stage of the service path counts every frame (counts, never timings)."""

from __future__ import annotations

import threading

import pytest

from frame_buffer import metrics
from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.flow import Producer, Worker
from frame_buffer.flow.buffer import AdaptiveBuffer, MemoryBudget
from frame_buffer.frame import Frame
from frame_buffer.queue import FrameQueue
from tests.conftest import QueueFactory
from tests.frames import make_frames
from tests.servers import wait_until


def stage_counts() -> dict[str, float]:
    """Observations so far of each stage, from the process's registry."""
    return {
        stage: metrics.REGISTRY.get_sample_value("frame_queue_stage_seconds_count", {"stage": stage}) or 0.0
        for stage in metrics.STAGES
    }


def counted_since(before: dict[str, float]) -> dict[str, float]:
    now = stage_counts()
    return {stage: now[stage] - before[stage] for stage in metrics.STAGES}


@pytest.mark.parametrize("backend", ["redis"])
def test_producer_to_worker_counts_every_frame_in_every_stage(make_queue: QueueFactory) -> None:
    """50 frames through Producer -> Redis -> Worker: each of the six stages observed each frame once."""

    def open_queue() -> FrameQueue:
        return make_queue(groups=("g",))

    frames = make_frames(50, cameras=2)
    handled: list[Frame] = []
    before = stage_counts()
    producer = Producer(open_queue, batch=8)
    worker = Worker(open_queue, "g", "w1", handled.append, batch=16, block_ms=100)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        for frame in frames:
            assert producer.submit(frame)
        producer.close(30)
        assert producer.published == len(frames)
        wait_until(lambda: worker.acked == len(frames), 30, "the worker to ack every frame")
    finally:
        stop.set()
        thread.join()
    assert counted_since(before) == dict.fromkeys(metrics.STAGES, len(frames))


def test_only_frames_taken_to_publish_end_their_buffer_stage() -> None:
    """The publisher's take counts the ``buffer`` stage; moving frames to the spool does not."""
    buffer = AdaptiveBuffer(MemoryBudget(2**20), min_capacity=10)
    for frame in make_frames(5):
        buffer.append((frame.camera, _encoded(frame)), 1000)
    before = stage_counts()
    buffer.take(2)  # to the spool
    buffer.drop_oldest()
    assert len(buffer.take(5, publishing=True)) == 2
    assert counted_since(before) == {**dict.fromkeys(metrics.STAGES, 0.0), "buffer": 2.0}


def _encoded(frame: Frame) -> EncodedFrame:
    return FrameCodec().encode(frame)


def test_observe_stage_counts_a_batch_and_never_goes_below_zero() -> None:
    """A batch's shared duration counts once per frame; a negative span (clocks) counts as 0."""
    before = stage_counts()
    sum_before = metrics.REGISTRY.get_sample_value("frame_queue_stage_seconds_sum", {"stage": "ack"}) or 0.0
    metrics.observe_stage("ack", -5, 3)
    assert counted_since(before)["ack"] == 3
    assert metrics.REGISTRY.get_sample_value("frame_queue_stage_seconds_sum", {"stage": "ack"}) == sum_before
