"""The loss definition as arithmetic, under each policy, with a consumer too slow to keep up.

Every frame ``submit`` accepted is delivered, unless a drop policy discarded it later, and every drop is
counted: calls = accepted + refused, accepted = published + dropped after acceptance, delivered = published,
and each camera's frames arrive in order.
"""

from __future__ import annotations

import threading
import time

import pytest

from frame_buffer.flow import Producer, Worker
from frame_buffer.frame import Frame
from tests.conftest import QueueFactory
from tests.frames import pattern
from tests.servers import wait_until


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_every_accepted_frame_is_delivered_or_counted_as_dropped(
    make_queue: QueueFactory, backend: str, policy: str
) -> None:
    calls, cameras = 1500, 3
    open_queue = lambda: make_queue(groups=("g",), max_lag=60, publish_timeout_s=0.02)  # noqa: E731
    open_queue()  # the memory backend's one instance exists before two threads ask for it at once
    delivered: list[tuple[str, int]] = []

    def slow(frame: Frame) -> None:
        time.sleep(0.0002)
        delivered.append((frame.camera, frame.seq))

    worker = Worker(open_queue, "g", "w1", slow, batch=8, block_ms=50)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    producer = Producer(open_queue, policy=policy, min_capacity=20, max_capacity=20, batch=8, block_timeout_s=30)
    refused = 0
    try:
        for i in range(calls):
            frame = Frame(f"cam{i % cameras}", i // cameras, pattern(i, (4, 4, 3)))
            refused += not producer.submit(frame)
        assert producer.flush(30)
        producer.close()
        summary = producer.summary()
        wait_until(lambda: len(set(delivered)) >= summary["published"], 30, "the consumer to catch up")
    finally:
        stop.set()
        thread.join()
    dropped = summary["dropped"]
    accepted = summary["submitted"]
    dropped_after_acceptance = dropped.get("drop_oldest", 0) + (dropped.get("spool_full", 0) if policy == "drop_oldest"
                                                                 else 0)
    print(f"\n[{policy}] calls={calls} accepted={accepted} refused={refused} published={summary['published']} "
          f"delivered={len(set(delivered))} duplicates={len(delivered) - len(set(delivered))} dropped={dropped}")
    assert calls == accepted + refused
    assert refused == dropped.get("drop_newest", 0) + (dropped.get("spool_full", 0) if policy == "drop_newest" else 0)
    assert accepted == summary["published"] + dropped_after_acceptance
    assert len(set(delivered)) == summary["published"]
    if policy == "block":
        assert dropped == {} and summary["published"] == calls
    else:
        assert sum(dropped.values()) > 0, "the consumer was slow enough for the policy to act"
    first: dict[str, list[int]] = {}
    for cam, seq in dict.fromkeys(delivered):  # first deliveries, in arrival order
        first.setdefault(cam, []).append(seq)
    assert all(seqs == sorted(seqs) for seqs in first.values()), "a camera's frames out of order"
    assert len(delivered) == len(set(delivered)), "no failure happened, so nothing is delivered twice"
