"""Every confirmed frame survives a hard kill of the broker (SIGKILL of its Erlang VM) and a restart.

Runs a RabbitMQ node of its own on free ports (tests/servers.py); the machine's node on 5672 is not touched.

The queues are declared in an earlier life of the node (declare, clean stop, start): RabbitMQ 3.10 keeps a
quorum queue's Raft registration in a DETS table that reaches the disk lazily, and a queue declared moments
before a SIGKILL comes back as a new, empty and leaderless member (docs/backend-comparison.md). Deployments
declare their groups at startup, long before any crash; this test does the same.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from frame_buffer.queue import BackendUnavailable, QueueSettings
from frame_buffer.queue.rabbitmq import RabbitMQQueue
from tests.frames import make_frames
from tests.servers import RabbitMQNode

pytestmark = pytest.mark.slow


def test_confirmed_frames_survive_sigkill_of_the_broker(tmp_path: Path) -> None:
    node = RabbitMQNode(tmp_path / "rabbitmq").start()
    try:
        settings = QueueSettings(stream="durable", groups=("g",), publish_timeout_s=10)
        RabbitMQQueue(node.url, settings).close()  # declares the exchange and the group's queue
        node.stop()
        node.start()
        queue = RabbitMQQueue(node.url, settings, backoff_s=(0.05, 0.2))
        frames = make_frames(600, cameras=3, shape=(64, 64, 3))
        confirmed: list[str] = []
        for start in range(0, 400, 50):  # publish_many returns once the broker confirmed the batch
            confirmed += queue.publish_many(frames[start:start + 50])

        # Keep publishing from a thread and kill the broker under it: what it was told is confirmed counts.
        two_more = threading.Event()
        failures: list[BaseException] = []

        def publish_until_killed() -> None:
            try:
                for start in range(400, 600, 20):
                    confirmed.extend(queue.publish_many(frames[start:start + 20]))
                    if start >= 420:
                        two_more.set()
            except BackendUnavailable as exc:
                failures.append(exc)
            two_more.set()

        publisher = threading.Thread(target=publish_until_killed)
        publisher.start()
        assert two_more.wait(30)
        node.kill()
        publisher.join(30)
        assert len(confirmed) >= 440
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{node.port}"):
            queue.consume("g", "c", block_ms=100)

        node.start()
        got = {}
        deadline = time.monotonic() + 30
        while not set(confirmed) <= set(got):
            assert time.monotonic() < deadline, f"{len(set(confirmed) - set(got))} confirmed frames missing"
            try:
                batch = queue.consume("g", "c", count=100, block_ms=200)
            except BackendUnavailable:
                continue  # reconnecting with backoff: the call fails fast until the next attempt is due
            queue.ack(batch)
            got.update((d.id, d.frame) for d in batch)
        by_key = {(f.camera, f.seq): f for f in frames}
        for frame in got.values():
            np.testing.assert_array_equal(frame.data, by_key[(frame.camera, frame.seq)].data)
        assert not failures or "unavailable" in str(failures[0])
        queue.close()
    finally:
        node.stop()
