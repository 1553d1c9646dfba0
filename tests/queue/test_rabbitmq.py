"""RabbitMQ-specific behaviour: topology, classic queues, broker-side limits, refusals, outages.

Runs against the machine's broker (5672) with unique names, and a throwaway node for the outage tests.
"""

from __future__ import annotations

import os
import signal
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from frame_buffer.codec import EncodedFrame
from frame_buffer.frame import Frame
from frame_buffer.queue import BackendUnavailable, BackpressureTimeout, QueueError, QueueSettings, open_queue
from frame_buffer.queue.rabbitmq import RabbitMQQueue, delay_step_ms, delete_topology, topology
from tests.conftest import AMQP_URL
from tests.frames import make_frames
from tests.queue.test_conformance import drain
from tests.servers import RabbitMQNode, free_port

GROUPS = ("g", "h")


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    delete_topology(AMQP_URL, QueueSettings(stream=name), GROUPS)


def open_rabbitmq(stream: str, **options: object) -> RabbitMQQueue:
    tuning = {k: options.pop(k) for k in ("queue_type", "prefetch", "confirm_window", "backoff_s") if k in options}
    return RabbitMQQueue(AMQP_URL, QueueSettings(stream=stream, **options), **tuning)  # type: ignore[arg-type]


@pytest.fixture
def broker() -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """A plain pika channel on the machine's broker, for doing things behind the backend's back."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    yield connection.channel()
    if connection.is_open:
        connection.close()


def test_options_are_read_back_and_prefetch_is_capped_by_max_lag(stream: str) -> None:
    queue = RabbitMQQueue(AMQP_URL, QueueSettings(stream=stream, max_lag=100), queue_type="classic", prefetch=1000,
                          confirm_window=8, confirm_timeout_s=2.5, poll_s=0.02)
    assert (queue.queue_type, queue.prefetch, queue.confirm_window, queue.poll_s) == ("classic", 25, 8, 0.02)
    queue.confirm_timeout_s = 4.0  # may be changed on a live instance: its parts read it from one place
    assert queue.confirm_timeout_s == queue.tuning.confirm_timeout_s == 4.0
    queue.close()


def test_settings_and_names() -> None:
    with pytest.raises(ValueError, match="queue_type"):
        RabbitMQQueue(AMQP_URL, queue_type="lazy")  # type: ignore[arg-type]
    assert [delay_step_ms(d) for d in (0.0, 0.01, 0.011, 7, 1e6)] == [10, 10, 20, 10_000, 3_600_000]
    exchanges, queues = topology(QueueSettings(stream="s"), ["g"])
    assert exchanges == ["s", "s:unrouted"]
    assert queues[:3] == ["s:unrouted", "s:dlq", "s.g"] and "s.g.retry.50" in queues
    assert isinstance(open_queue("rabbitmq", amqp_url=AMQP_URL, settings=QueueSettings(stream="x")), RabbitMQQueue)
    delete_topology(AMQP_URL, QueueSettings(stream="x"))


def test_topology_as_declared(stream: str, broker: pika.adapters.blocking_connection.BlockingChannel) -> None:
    queue = open_rabbitmq(stream, groups=("g",), max_lag=7, max_deliveries=2, confirm_window=3)
    queue.publish(make_frames(1)[0])
    expected = {
        "x-queue-type": "quorum", "x-max-length": 10, "x-overflow": "reject-publish", "x-delivery-limit": 3,
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{stream}:dlq",
        "x-dead-letter-strategy": "at-least-once",
    }
    broker.queue_declare(f"{stream}.g", durable=True, arguments=expected)  # equivalent: accepted
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-max-length"):
        broker.queue_declare(f"{stream}.g", durable=True, arguments={**expected, "x-max-length": 7})
    assert queue.stats("g").lag == 1
    queue.close()


def test_classic_queues_count_attempts_and_nack_by_republishing(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",), queue_type="classic", max_deliveries=2)
    queue.publish(make_frames(1)[0])
    attempts = []
    while not queue.dead_letters():
        for delivery in queue.consume("g", "c", count=1, block_ms=2000):
            attempts.append(delivery.attempts)
            queue.nack(delivery)  # no delay: republished to the group's queue with its attempts
    assert attempts == [1, 2]
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.attempts, letter.group) == ("delivery_limit", 3, "g")
    queue.publish(make_frames(1)[0])
    assert len(queue.consume("g", "c", count=1, block_ms=2000)) == 1
    queue.close()  # not acked: the broker requeues it and marks it redelivered
    again = open_rabbitmq(stream, queue_type="classic")
    assert [d.attempts for d in drain(again, "g", "c", 1)] == [2]
    again.close()


def test_quorum_nack_without_delay_requeues_counting_the_delivery(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    queue.publish(make_frames(1)[0])
    (delivery,) = queue.consume("g", "c", count=1, block_ms=2000)
    queue.nack(delivery)
    (again,) = queue.consume("g", "c", count=1, block_ms=2000)
    assert (again.id, again.attempts) == (delivery.id, 2)
    queue.nack(again)  # the broker's x-delivery-count is a 64-bit field: pika's own int subclass
    (again,) = queue.consume("g", "c", count=1, block_ms=2000)
    assert (again.id, again.attempts) == (delivery.id, 3)
    queue.ack([again])
    queue.nack(again)  # already acked: nothing to give back
    queue.close()


def test_acks_out_of_order_and_stale_deliveries(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    queue.publish_many(make_frames(4))
    batch = queue.consume("g", "c", count=4, block_ms=2000)
    assert len(batch) == 4
    queue.ack([batch[1]])  # the others stay pending: acked one by one, not with `multiple`
    assert queue.stats("g").pending == 3
    queue.ack(batch)
    assert queue.stats("g").pending == 0
    queue.publish(make_frames(1)[0])
    (held,) = queue.consume("g", "c", count=1, block_ms=2000)
    queue.close()  # its channel is gone: the broker requeued the delivery
    queue.ack([held])
    queue.nack(held, delay_s=1)
    queue.dead_letter(held, "handler_error")  # written to the dead-letter queue; the ack is skipped
    assert [x.original_id for x in queue.dead_letters()] == [held.id]
    assert [d.id for d in drain(queue, "g", "c", 1)] == [held.id]  # and delivered again
    queue.close()


def test_frames_held_while_no_group_exists_go_to_the_first_group(stream: str) -> None:
    queue = open_rabbitmq(stream, confirm_window=4)
    queue.publish_many(make_frames(10))
    assert queue.stats("g").depth == 10
    assert [d.frame.seq for d in drain(queue, "g", "c", 10)] == list(range(10))
    assert queue.stats("g").depth == 0
    queue.close()


Channel = pika.adapters.blocking_connection.BlockingChannel


def test_entry_without_header_is_dead_lettered(stream: str, broker: Channel) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    broker.basic_publish(stream, "frames.cam", b"foreign", pika.BasicProperties(delivery_mode=2))
    queue.publish(make_frames(1)[0])
    assert len(drain(queue, "g", "c", 1)) == 1
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.header, letter.payload, letter.original_id) == (
        "missing_header", None, b"foreign", f"tag-{letter.original_id[4:]}")
    queue.close()


def test_purge_and_list_dead_letters_by_id(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    queue.publish_many(make_frames(3))
    batch = queue.consume("g", "c", count=3, block_ms=2000)
    for delivery in batch:
        queue.dead_letter(delivery, "handler_error", "boom")
    letters = queue.dead_letters()
    assert queue.dead_letters(count=1, after=letters[0].id) == letters[1:2]
    assert queue.dead_letters(after="0") == letters  # an id no longer listed: those sorting after it
    assert queue.purge_dead_letters([letters[1].id, "nope"]) == 1
    assert queue.replay_dead_letters([]) == 0
    assert [x.id for x in queue.dead_letters()] == [letters[0].id, letters[2].id]
    queue.close()


def test_delivery_limit_backstop_is_listed_with_the_brokers_reason(stream: str) -> None:
    # The broker dead-letters a frame returned more than max_deliveries + 1 times: only when consumers keep
    # dying with it, since consume() dead-letters at max_deliveries first. Fetch without consume() to get there.
    settings = {"groups": ("g",), "max_deliveries": 1}
    open_rabbitmq(stream, **settings).publish(make_frames(1)[0])
    for _ in range(3):
        dying = open_rabbitmq(stream, **settings)
        assert len(dying._fetch("g", "c", 1, 2000)) == 1
        dying.close()
    queue = open_rabbitmq(stream, **settings)
    (letter,) = queue.dead_letters()
    assert (letter.reason, letter.group, letter.attempts) == ("delivery_limit", "g", 0)
    assert letter.dead_lettered_at_ms > 0
    assert queue.replay_dead_letters([letter.id]) == 1
    assert [d.attempts for d in drain(queue, "g", "c", 1)] == [1]
    queue.close()


def test_a_full_queue_nacks_the_publish_and_publish_waits(stream: str) -> None:
    small = open_rabbitmq(stream, groups=("g",), max_lag=4, confirm_window=1)  # x-max-length 5
    small.close()
    # A producer configured with a larger max_lag cannot see the limit: the broker's reject-publish holds it.
    # On a quorum queue the limit is soft (what is in flight when it is reached may still get in); later
    # publishes are nacked, and publish retries them until consumers make room or publish_timeout_s.
    producer = open_rabbitmq(stream, groups=("g",), max_lag=1000, publish_timeout_s=0.5)
    whole_batches = 0
    with pytest.raises(BackpressureTimeout, match="x-max-length") as refused:
        for _ in range(10):
            producer.publish_many(make_frames(10))
            whole_batches += 1
    # The refused batch was confirmed in part: those frames are stored and must not be published again.
    stored = 10 * whole_batches + len(refused.value.written)
    assert stored >= 5 and len(refused.value.written) < 10
    patient = open_rabbitmq(stream, groups=("g",), max_lag=1000, publish_timeout_s=30)
    frames = [Frame("patient", seq, frame.data) for seq, frame in enumerate(make_frames(10))]
    thread = threading.Thread(target=patient.publish_many, args=(frames,))
    thread.start()
    consumer = open_rabbitmq(stream, groups=("g",))
    seqs: list[int] = []
    earlier = 0
    while len(seqs) < 10:
        batch = consumer.consume("g", "c", count=50, block_ms=100)
        consumer.ack(batch)
        seqs += [d.frame.seq for d in batch if d.frame.camera == "patient"]
        earlier += sum(d.frame.camera != "patient" for d in batch)
    thread.join()
    assert sorted(seqs) == list(range(10))
    assert earlier == stored, "what the refused publish reported as written is what the queue held"
    for queue in (producer, patient, consumer):
        queue.close()


def test_unroutable_frame_is_reported(stream: str, broker: pika.adapters.blocking_connection.BlockingChannel) -> None:
    queue = open_rabbitmq(stream)
    broker.queue_delete(f"{stream}:unrouted")  # nothing left to hold frames no group queue takes
    with pytest.raises(QueueError, match="no queue is bound"):
        queue.publish(make_frames(1)[0])
    queue.close()


def test_refusals_are_queue_errors(stream: str, broker: pika.adapters.blocking_connection.BlockingChannel) -> None:
    broker.exchange_declare(stream, "fanout", durable=True)
    with pytest.raises(QueueError, match="PRECONDITION_FAILED"):
        open_rabbitmq(stream)
    broker.exchange_delete(stream)
    queue = open_rabbitmq(stream)
    broker.exchange_delete(stream)  # deleted under a running producer: NOT_FOUND closes its channel
    with pytest.raises(QueueError, match="NOT_FOUND"):
        queue.publish(make_frames(1)[0])
    queue.close()
    owner = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    owner.channel().queue_declare(f"{stream}.h", exclusive=True)  # another connection's exclusive queue
    with pytest.raises(QueueError, match="RESOURCE_LOCKED"):
        open_rabbitmq(stream).ensure_group("h")
    owner.close()
    queue = open_rabbitmq(stream, groups=("g",))
    broker.queue_delete(f"{stream}:dlq")
    with pytest.raises(QueueError, match="NOT_FOUND"):
        queue.dead_letters()
    queue.close()


def test_consumer_name_taken_over_within_a_process(stream: str) -> None:
    first = open_rabbitmq(stream, groups=("g",))
    first.publish_many(make_frames(2))
    assert len(first.consume("g", "w", count=2, block_ms=2000)) == 2
    first.close()
    second = open_rabbitmq(stream, groups=("g",))  # the first is closed: nothing to take over
    assert [d.attempts for d in drain(second, "g", "w", 2)] == [2, 2]
    second.close()


def test_unreachable_broker_is_reported_with_its_address() -> None:
    port = free_port()
    queue = RabbitMQQueue(f"amqp://guest:guest@127.0.0.1:{port}/%2F", backoff_s=(60, 60))
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}.*next reconnection attempt"):
        queue.publish(make_frames(1)[0])
    queue.close()


def test_stalled_and_killed_broker(tmp_path: Path) -> None:
    """SIGSTOP: publish reports an outage when confirms do not come. SIGKILL: reported with the address."""
    node = RabbitMQNode(tmp_path / "rabbitmq").start()
    try:
        # Classic queues: a quorum queue declared moments before a SIGKILL does not come back on 3.10
        # (see test_rabbitmq_durability.py); this test is about reporting and reconnecting.
        settings = QueueSettings(stream="s", groups=("g",), publish_timeout_s=0.3)
        queue = RabbitMQQueue(node.url, settings, backoff_s=(0.01, 0.01), queue_type="classic", confirm_timeout_s=0.3)
        queue.publish(make_frames(1)[0])
        os.kill(node.beam_pid(), signal.SIGSTOP)
        try:
            with pytest.raises(BackendUnavailable, match=r"no publisher confirm within 0\.3s"):
                queue.publish(make_frames(1)[0])
        finally:
            os.kill(node.beam_pid(), signal.SIGCONT)
        queue.confirm_timeout_s = 30
        queue.publish(make_frames(1)[0])  # a new channel; the given-up one's late confirm is ignored
        assert len(drain(queue, "g", "c", 2)) >= 2

        node.kill()
        queue.link.last_io = 0.0  # as if idle past a heartbeat: the next call probes the connection first
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{node.port}"):
            queue.stats("g")
        node.start()
        ready = threading.Event()
        while not ready.is_set():
            try:
                queue.publish(make_frames(1)[0])
                ready.set()
            except BackendUnavailable:
                continue  # until the next reconnection attempt is due
        assert queue.stats("g").depth >= 1
        queue.close()
    finally:
        node.stop()


def test_encoded_payload_is_sent_from_its_own_buffer(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    frame = make_frames(1, shape=(64, 64, 3))[0]
    encoded = queue.codec.encode(frame)
    assert isinstance(encoded.payload, memoryview)  # the array's memory, handed to pika as it is
    queue.publish_encoded([("cam0", EncodedFrame(encoded.header, encoded.payload))])
    (delivery,) = drain(queue, "g", "c", 1)
    assert bytes(delivery.frame.data.data) == bytes(encoded.payload)
    queue.close()


def test_raw_pika_baseline_runs() -> None:
    from frame_buffer.commands.bench import pika_raw

    assert pika_raw.throughput(AMQP_URL, b"x" * 1000, 50, window=8) > 0
    samples = pika_raw.latency(AMQP_URL, b"x" * 1000, rate=500, seconds=0.1)
    assert len(samples) == 50 and all(sample >= 0 for sample in samples)


def test_large_batches_are_flushed_as_they_go(stream: str) -> None:
    queue = open_rabbitmq(stream, groups=("g",))
    frames = make_frames(24, shape=(240, 320, 3))  # 225 KiB each: the output is flushed every few frames
    queue.publish_many(frames)
    got = drain(queue, "g", "c", 24)
    assert [d.frame.seq for d in got] == list(range(24))
    assert bytes(got[-1].frame.data.data) == frames[-1].data.tobytes()  # type: ignore[union-attr]
    queue.close()


def test_a_second_instance_under_the_same_consumer_name_takes_over_the_unacked_frames(stream: str) -> None:
    # AMQP ties unacked deliveries to a channel, not to a name: an instance that starts consuming under a name
    # another instance of this process still holds closes that one's subscription, so the broker requeues.
    first = open_rabbitmq(stream, groups=("g",))
    first.publish_many(make_frames(5))
    held = first.consume("g", "worker-1", count=5, block_ms=1000)
    assert len(held) == 5
    second = open_rabbitmq(stream, groups=("g",))
    again = drain(second, "g", "worker-1", 5)
    assert sorted(d.frame.seq for d in again) == [d.frame.seq for d in held]
    assert all(d.attempts == 2 for d in again)
    first.close()
    second.close()


def test_listing_dead_letters_holds_about_count_of_them_in_memory(stream: str, broker: Channel) -> None:
    # The listing used to read the whole dead-letter queue, payloads included, to return `count` of them.
    queue = open_rabbitmq(stream, groups=("g",))
    size, total = 1024 * 1024, 300
    ids = [f"{i:05d}" for i in range(total)]
    broker.confirm_delivery()
    for i, entry_id in enumerate(ids):
        headers = {"h": b"header", "x-fb-reason": "handler_error", "x-fb-group": "g", "x-fb-attempts": 1}
        broker.basic_publish("", f"{stream}:dlq", bytes([i % 256]) * size,
                             pika.BasicProperties(delivery_mode=2, message_id=entry_id, headers=headers))
    assert queue.stats("g").dead_letters == total

    def listed(**options: Any) -> tuple[list[str], int]:
        tracemalloc.start()
        try:
            letters = queue.dead_letters(count=10, **options)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert all(letter.payload == bytes([int(letter.id[:5]) % 256]) * size for letter in letters)
        print(f"dead_letters(count=10, {options}) of {total} x 1 MiB: peak {peak / size:.1f} MiB")
        return [letter.id for letter in letters], peak

    # Each: the 10 letters returned, the one being read, and pika's reassembly of one body.
    bound = 14 * size
    first, peak = listed()
    assert first == ids[:10] and peak < bound
    middle, peak = listed(after=ids[150])
    assert middle == ids[151:161] and peak < bound
    gone, peak = listed(after="00150x")  # no longer in the queue: the first ten sorting after it
    assert gone == ids[151:161] and peak < bound
    assert queue.stats("g").dead_letters == total, "every letter given back"
    assert [x.id for x in queue.dead_letters(count=3)] == ids[:3], "given back in place"
    queue.close()
