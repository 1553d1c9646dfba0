"""The seven fault tests of issue 4, each on its own redis-server (AOF ``appendfsync always``).

Real processes where it matters: redis-server is SIGKILLed and restarted, consumers run in their own
processes (``consumer_proc.py``) and are SIGKILLed. Nothing waits on a sleep: every step polls a
condition with a deadline. Each test prints published / delivered / dropped / dead-lettered and asserts
the arithmetic: with no drop policy in play, every published frame is delivered at least once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgpack
import pytest

from frame_buffer import metrics
from frame_buffer.commands.soak.sampling import rss_mb
from frame_buffer.flow import CircuitBreaker, ExponentialBackoff, Producer
from frame_buffer.frame import Frame
from frame_buffer.queue import FrameQueue, QueueSettings, open_queue
from frame_buffer.queue.redis_streams import RedisStreamsQueue
from tests import servers
from tests.faults.helpers import ConsumerProcess, all_dead_letters, redis_info, tally
from tests.frames import pattern
from tests.servers import RedisServer, free_port, wait_until, write_malformed_entries

pytestmark = pytest.mark.slow


def opener(url: str, **settings: object) -> Callable[[], FrameQueue]:
    """The producer's queue factory: a fresh client on every (re)connect."""
    queue_settings = QueueSettings(groups=("g",), **settings)  # type: ignore[arg-type]
    return lambda: RedisStreamsQueue(url, queue_settings, max_block_ms=1000, block_margin_s=2.0)


def fast_breaker() -> CircuitBreaker:
    """Opens on the second failure, probes again after 50 ms growing to 0.5 s."""
    return CircuitBreaker("publish", failure_threshold=2, cooldown=ExponentialBackoff(0.05, 0.5))


def frame(i: int, cameras: int = 2, shape: tuple[int, ...] = (8, 8, 3), **meta: bool) -> Frame:
    return Frame(f"cam{i % cameras}", i // cameras, pattern(i // cameras, shape), meta=dict(meta))


def keys(count: int, cameras: int = 2) -> set[tuple[str, int]]:
    return {(f"cam{i % cameras}", i // cameras) for i in range(count)}


def first_seen_in_order(delivered: list[tuple[str, int]]) -> bool:
    """Per camera, the first delivery of each frame comes in sequence order (redeliveries excepted)."""
    seen: set[tuple[str, int]] = set()
    last: dict[str, int] = {}
    for key in delivered:
        if key in seen:
            continue
        seen.add(key)
        if key[1] < last.get(key[0], -1):
            return False
        last[key[0]] = key[1]
    return True


def test_1_consumer_ten_times_slower_loses_nothing_within_budget(redis_server: RedisServer, tmp_path: Path) -> None:
    total, budget, shape = 10_000, 2**20, (32, 32, 3)
    consumer = ConsumerProcess(tmp_path, redis_server.url, "slow", "--delay", "0.001", "--batch", "32")
    producer = Producer(opener(redis_server.url, max_lag=1000, publish_timeout_s=1.0), budget_bytes=budget,
                        block_timeout_s=120)
    rss_start = rss_mb() or 0.0  # this process: always there
    peaks = {"bytes": 0, "rss": rss_start, "redis": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peaks["bytes"] = max(peaks["bytes"], producer.budget.used)
            peaks["rss"] = max(peaks["rss"], rss_mb() or 0.0)
            peaks["redis"] = max(peaks["redis"], int(redis_info(redis_server.url, "memory")["used_memory"]))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    rate = 8000.0  # offered: about ten times what the consumer's 1 ms per frame allows
    for i in range(total):
        producer.submit(frame(i, shape=shape))
        if i % 100 == 99 and (ahead := started + (i + 1) / rate - time.monotonic()) > 0:
            time.sleep(ahead)  # pacing the source, not synchronisation
    submit_s = time.monotonic() - started
    assert producer.flush(120)
    wait_until(lambda: set(consumer.delivered()) >= keys(total), 120, "every frame at the slow consumer")
    consume_s = time.monotonic() - started
    sampling.set()
    sampler.join()
    producer.close()
    worker = consumer.stop()
    summary = producer.summary()
    counts = tally("slow consumer", summary["published"], consumer.delivered(), summary["dropped"],
                   all_dead_letters(RedisStreamsQueue(redis_server.url)),
                   budget_bytes=budget, peak_held_bytes=summary["peak_bytes"], peak_sampled_bytes=peaks["bytes"],
                   rss_growth_mib=round(peaks["rss"] - rss_start, 1), redis_peak_mib=round(peaks["redis"] / 2**20, 1),
                   offered_fps=rate, submit_fps=round(total / submit_s), consume_fps=round(total / consume_s),
                   backpressure_waits=summary["backpressure_waits"], acked=worker.get("acked"))
    assert counts["published"] == summary["submitted"] == total
    assert counts["delivered"] == total and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert summary["peak_bytes"] <= budget and peaks["bytes"] <= budget
    assert peaks["rss"] - rss_start < 64 + budget / 2**20, "the process does not hold frames outside the budget"
    assert total / consume_s * 5 < rate, "the consumer is about ten times slower than the offered rate"
    assert submit_s > total / rate * 5, "backpressure slowed the source down to the consumer's pace"


class Broker(Protocol):
    url: str

    def start(self) -> object: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Broker]]:
    """Redis (AOF appendfsync always) or a RabbitMQ node of this test's own, on free ports."""
    server: Broker
    if request.param == "redis":
        server = RedisServer(tmp_path / "redis")
        server.start()
    else:
        node = servers.RabbitMQNode(tmp_path / "rabbitmq")
        node.start()
        # As after a deployment: the group's quorum queue is declared and the node has been restarted since.
        # A quorum queue declared seconds before a SIGKILL is not recovered: Ra had not yet made its
        # registration durable, and the queue stays "leader not known" after the restart.
        open_on("rabbitmq", node.url)().close()
        node.stop()
        node.start()
        server = node
    yield request.param, server
    server.stop()


def open_on(backend: str, url: str, **settings: object) -> Callable[[], FrameQueue]:
    if backend == "redis":
        return opener(url, **settings)
    queue_settings = QueueSettings(groups=("g",), **settings)  # type: ignore[arg-type]
    return lambda: open_queue(backend, amqp_url=url, settings=queue_settings)


def test_2_broker_killed_and_restarted_mid_stream(broker: tuple[str, Broker], tmp_path: Path) -> None:
    total = 3000
    backend, redis_server = broker
    consumer = ConsumerProcess(tmp_path, redis_server.url, "c1", "--claim-ms", "2000", backend=backend)
    producer = Producer(open_on(backend, redis_server.url), breaker=fast_breaker(), budget_bytes=64 * 2**20)
    opened_before = metrics.REGISTRY.get_sample_value("frame_queue_breaker_transitions_total", {"state": "open"}) or 0

    def submit(start: int, stop: int) -> None:
        for i in range(start, stop):
            assert producer.submit(frame(i))

    submit(0, 1000)
    wait_until(lambda: len(consumer.delivered()) >= 500, 30, "the stream to be flowing")
    redis_server.kill()
    submit(1000, 2000)
    wait_until(lambda: producer.breaker.transitions["open"] >= 1 and producer.summary()["spool_frames"] > 0,
               30, "the breaker to open and frames to spool")
    during = producer.summary()
    assert producer.degraded and during["breaker_state"] in ("open", "half_open")
    redis_server.start()  # same port and directory: the AOF (Redis), the quorum queue log (RabbitMQ) bring
    # back every write the server acknowledged
    submit(2000, total)
    assert producer.flush(60)
    wait_until(lambda: set(consumer.delivered()) >= keys(total), 60, "every frame after the restart")
    producer.close()
    worker = consumer.stop()
    summary = producer.summary()
    counts = tally(f"{backend} SIGKILL", summary["published"], consumer.delivered(), summary["dropped"],
                   all_dead_letters(open_on(backend, redis_server.url)()),
                   spooled=summary["spooled"], replayed=summary["replayed"], spool_at_outage=during["spool_frames"],
                   publish_failures=summary["publish_failures"], breaker=summary["breaker_transitions"],
                   consumer_redelivered=worker.get("redelivered"))
    assert summary["submitted"] == total and counts["delivered"] == total
    assert counts["published"] >= total, "a batch whose reply was lost is published again: at least once"
    assert counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert summary["replayed"] >= during["spool_frames"] > 0
    assert summary["spooled"] <= total, "a frame is counted once however often its replay failed"
    assert summary["breaker_state"] == "closed" and not producer.degraded
    assert (metrics.REGISTRY.get_sample_value("frame_queue_breaker_transitions_total", {"state": "open"}) or 0) \
        > opened_before
    assert first_seen_in_order(consumer.delivered())


def test_3_redis_unreachable_at_start_runs_on_the_spool(tmp_path: Path) -> None:
    total = 500
    server = RedisServer(tmp_path / "redis", port=free_port())  # nobody listens there yet
    producer = Producer(opener(server.url), breaker=fast_breaker(), budget_bytes=16 * 2**20)
    for i in range(total):
        assert producer.submit(frame(i))
    wait_until(lambda: producer.summary()["spool_frames"] == total, 30, "every frame in the spool")
    degraded = producer.summary()
    print(f"\n[unreachable at start] before recovery: degraded={producer.degraded} "
          f"published={degraded['published']} spool={degraded['spool_frames']} breaker={degraded['breaker_state']}")
    assert producer.degraded and degraded["published"] == 0 and degraded["breaker_state"] != "closed"
    # While Redis is down the breaker cycles open -> half-open (a probe) -> open: either is right, closed is not.
    assert metrics.REGISTRY.get_sample_value("frame_queue_breaker_state") in (
        metrics.BREAKER_STATES["open"], metrics.BREAKER_STATES["half_open"])
    server.start()
    try:
        consumer = ConsumerProcess(tmp_path, server.url, "c1")
        assert producer.flush(60)
        wait_until(lambda: set(consumer.delivered()) >= keys(total), 60, "the replayed frames")
        producer.close()
        consumer.stop()
        summary = producer.summary()
        counts = tally("unreachable at start", summary["published"], consumer.delivered(), summary["dropped"],
                       all_dead_letters(RedisStreamsQueue(server.url)), replayed=summary["replayed"],
                       publish_failures=summary["publish_failures"])
        assert counts["published"] == summary["replayed"] == counts["delivered"] == total
        assert counts["dropped"] == counts["dead_lettered"] == counts["duplicates"] == 0
        assert consumer.delivered() == sorted(keys(total), key=lambda k: (k[1], k[0]))
        assert not producer.degraded
        assert metrics.REGISTRY.get_sample_value("frame_queue_breaker_state") == metrics.BREAKER_STATES["closed"]
    finally:
        server.stop()


def test_4_killed_consumer_frames_are_reclaimed(redis_server: RedisServer, tmp_path: Path) -> None:
    total = 2000
    producer = Producer(opener(redis_server.url))
    for i in range(total):
        producer.submit(frame(i))
    assert producer.flush(30)
    producer.close()
    doomed = ConsumerProcess(tmp_path, redis_server.url, "a", "--hang-after", "300", "--claim-ms", "500")
    client = redis_server.client()

    def pending_of(name: str) -> int:
        return len(client.xpending_range("frame_queue", "g", "-", "+", 1000, consumername=name))

    wait_until(lambda: len(doomed.delivered()) >= 300 and pending_of("a") > 0, 30, "consumer a holding frames")
    doomed.kill()
    orphaned = pending_of("a")
    rescuer = ConsumerProcess(tmp_path, redis_server.url, "b", "--claim-ms", "500")
    delivered = lambda: doomed.delivered() + rescuer.delivered()  # noqa: E731
    wait_until(lambda: set(delivered()) >= keys(total) and pending_of("a") == 0, 60, "consumer b to reclaim")
    worker = rescuer.stop()
    counts = tally("consumer SIGKILL", producer.summary()["published"], delivered(), producer.summary()["dropped"],
                   all_dead_letters(RedisStreamsQueue(redis_server.url)), orphaned_pending=orphaned,
                   handled_by_a=len(doomed.delivered()), handled_by_b=len(rescuer.delivered()),
                   redelivered_to_b=worker["redelivered"])
    assert counts["published"] == counts["delivered"] == total
    assert counts["dropped"] == counts["dead_lettered"] == 0
    assert orphaned > 0 and worker["redelivered"] >= orphaned
    assert client.xpending("frame_queue", "g")["pending"] == 0


def test_5_poison_frame_is_dead_lettered_after_the_configured_attempts(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    total, poison = 500, 250
    consumer = ConsumerProcess(tmp_path, redis_server.url, "c1", "--poison-meta", "poison", "--max-attempts", "3",
                               "--base", "0.01", "--cap", "0.05", "--claim-ms", "200")
    producer = Producer(opener(redis_server.url))
    for i in range(total):
        producer.submit(frame(i, poison=True) if i == poison else frame(i))
    assert producer.flush(30)
    producer.close()
    queue = RedisStreamsQueue(redis_server.url)
    wait_until(lambda: len(set(consumer.delivered())) == total - 1 and queue.stats("g").dead_letters == 1,
               30, "the poison frame in the dead-letter queue")
    worker = consumer.stop()
    letters = all_dead_letters(queue)
    counts = tally("poison frame", producer.summary()["published"], consumer.delivered(),
                   producer.summary()["dropped"], letters, consumer=worker)
    (letter,) = letters
    header = msgpack.unpackb(letter.header)
    assert (header["cam"], header["seq"]) == ("cam0", poison // 2)
    assert (letter.reason, letter.attempts) == ("handler_error", 3)
    assert "ValueError: poison frame cam0/125" in letter.error and letter.original_id
    assert counts["published"] == counts["delivered"] + counts["dead_lettered"] == total
    assert counts["duplicates"] == 0, "the other frames are delivered once each"
    assert worker == {"consumed": total - 1 + 3, "acked": total - 1, "redelivered": 2, "dead_lettered": 1,
                      "handler_errors": 3}
    assert queue.stats("g").pending == 0


def test_6_redis_at_maxmemory_is_backpressure(tmp_path: Path) -> None:
    total, shape, budget = 200, (128, 128, 3), 2**20  # 48 KiB frames: about 9 MiB into a 4 MiB Redis
    server = RedisServer(tmp_path / "redis", "--maxmemory", "4mb").start()
    try:
        producer = Producer(opener(server.url, publish_timeout_s=0.25), budget_bytes=budget, batch=4,
                            block_timeout_s=120)
        failures: list[BaseException] = []

        def source() -> None:
            try:
                for i in range(total):
                    producer.submit(frame(i, shape=shape))
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=source)
        thread.start()
        wait_until(lambda: producer.summary()["backpressure_waits"] >= 3, 60, "publish to hit maxmemory")
        stuck = producer.summary()
        assert thread.is_alive() and not failures, "the source waits, it does not crash"
        assert stuck["breaker_transitions"]["open"] == 0 and stuck["publish_failures"] == 0
        assert stuck["published"] < total and stuck["peak_bytes"] <= budget
        consumer = ConsumerProcess(tmp_path, server.url, "c1", "--batch", "4")
        wait_until(lambda: set(consumer.delivered()) >= keys(total), 120, "every frame once space freed")
        thread.join(30)
        assert not failures
        assert producer.flush(30)
        producer.close()
        consumer.stop()
        summary = producer.summary()
        counts = tally("maxmemory", summary["published"], consumer.delivered(), summary["dropped"],
                       all_dead_letters(RedisStreamsQueue(server.url)),
                       published_when_full=stuck["published"], backpressure_waits=summary["backpressure_waits"],
                       breaker=summary["breaker_transitions"], peak_held_bytes=summary["peak_bytes"],
                       evicted_keys=redis_info(server.url, "stats")["evicted_keys"])
        assert counts["published"] == counts["delivered"] == total
        assert counts["dropped"] == counts["dead_lettered"] == 0 and counts["evicted_keys"] == 0
        assert summary["breaker_transitions"]["open"] == 0
    finally:
        server.stop()


def test_7_burst_of_malformed_entries_from_redis_cli(redis_server: RedisServer, tmp_path: Path) -> None:
    consumer = ConsumerProcess(tmp_path, redis_server.url, "c1", "--batch", "64")
    producer = Producer(opener(redis_server.url))
    for i in range(100):
        producer.submit(frame(i))
    assert producer.flush(30)
    write_malformed_entries(redis_server.port, 1000)
    for i in range(100, 200):
        producer.submit(frame(i))
    assert producer.flush(30)
    producer.close()
    queue = RedisStreamsQueue(redis_server.url)
    wait_until(lambda: set(consumer.delivered()) >= keys(200) and queue.stats("g").dead_letters == 1000, 60,
               "the good frames delivered and the malformed ones dead-lettered")
    assert consumer.alive(), "the consumer keeps running"
    worker = consumer.stop()
    letters = all_dead_letters(queue)
    counts = tally("malformed burst", producer.summary()["published"], consumer.delivered(),
                   producer.summary()["dropped"], letters, written_with_redis_cli=1000, consumer=worker)
    assert counts["published"] == counts["delivered"] == 200 and counts["duplicates"] == 0
    assert counts["dead_lettered"] == 1000
    assert counts["dead_letter_reasons"] == {"missing_header": 500, "missing_payload": 250, "bad_header": 250}
    assert all(letter.reason in metrics.DEAD_LETTER_REASONS and letter.error and letter.original_id
               for letter in letters)
    assert queue.stats("g").pending == 0
