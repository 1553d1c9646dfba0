"""Redis-specific behaviour: OOM as backpressure, outages, deleted entries, malformed entries."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from frame_buffer.checks import server_address
from frame_buffer.errors import EXIT_CONFIG
from frame_buffer.frame import Frame
from frame_buffer.queue import BackendUnavailable, BackpressureTimeout, QueueError, QueueSettings, StreamWrongType
from frame_buffer.queue.redis_streams import RedisStreamsQueue, ShardedStreamsQueue
from tests.frames import make_frames, pattern
from tests.servers import RedisServer, free_port, wait_until, write_malformed_entries


def queue_on(server: RedisServer, **settings: object) -> RedisStreamsQueue:
    return RedisStreamsQueue(server.url, QueueSettings(**settings))  # type: ignore[arg-type]


def test_out_of_memory_is_backpressure_and_nothing_is_lost(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, "--maxmemory", "4mb").start()
    try:
        producer = queue_on(server, groups=("g",), publish_timeout_s=0.5)
        big = [Frame("cam", i, pattern(i, (256, 256, 3))) for i in range(200)]  # 196 KB each
        published = 0
        with pytest.raises(BackpressureTimeout, match="maxmemory"):
            for frame in big:
                producer.publish(frame)
                published += 1
        assert 0 < published < 200
        # At maxmemory Redis refuses XGROUP CREATE even for a group that exists: that one is looked up, a new
        # one fails. The refused frame's own 196 KB counted while it was refused, so the server may be just
        # under the limit again now: lower the limit below what is used to be sure it is over.
        admin = server.client()
        admin.config_set("maxmemory", admin.info("memory")["used_memory"] // 2)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            queue_on(server, groups=("new",))
        with pytest.raises(redis.exceptions.OutOfMemoryError):  # on a stream that does not exist yet either
            queue_on(server, stream="not_created_yet", groups=("g",))
        consumer = queue_on(server, groups=("g",))
        patient = queue_on(server, groups=("g",), publish_timeout_s=30)
        admin.config_set("maxmemory", "4mb")
        received: list[int] = []
        done = threading.Event()

        def consume() -> None:
            while not done.is_set():
                batch = consumer.consume("g", "c", count=4, block_ms=100)
                consumer.ack(batch)
                received.extend(d.frame.seq for d in batch)

        worker = threading.Thread(target=consume)
        worker.start()
        for frame in big[published:]:
            patient.publish(frame)
        deadline = time.monotonic() + 30
        while len(received) < 200 and time.monotonic() < deadline:
            worker.join(0.05)
        done.set()
        worker.join()
        assert received == list(range(200))
        assert server.client().info("stats")["evicted_keys"] == 0
    finally:
        server.stop()


def test_unreachable_server_is_reported_with_its_address() -> None:
    port = free_port()
    queue = RedisStreamsQueue(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
        queue.publish(make_frames(1)[0])
    queue.trim()  # housekeeping does not raise on an outage


def test_unreachable_cluster_seeds_are_named_by_their_address() -> None:
    """Each seed is named host:port in the error (the cluster fault tests printed "redis:" for every node of a
    seed list without credentials)."""
    ports = [free_port(), free_port()]
    seeds = ",".join(f"redis://127.0.0.1:{port}/0" for port in ports)
    with pytest.raises(BackendUnavailable, match=f"no seed answered: 127.0.0.1:{ports[0]}: .*; 127.0.0.1:{ports[1]}: "):
        ShardedStreamsQueue(seeds, shards=2, cluster=True)
    plain, with_password = server_address("rediss://10.0.0.1:7000"), server_address("redis://u:pw@10.0.0.1:7000/0")
    assert plain == with_password == "10.0.0.1:7000"


def test_killed_server_fails_consume_with_backend_unavailable(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g",))
    queue.publish(make_frames(1)[0])
    queue.ack(queue.consume("g", "c", block_ms=100))  # restart recovery and first claim sweep done
    redis_server.kill()
    with pytest.raises(BackendUnavailable, match=str(redis_server.port)):
        queue.consume("g", "c", block_ms=100)


def test_blocking_read_that_times_out_is_not_a_failure(redis_server: RedisServer) -> None:
    queue = RedisStreamsQueue(redis_server.url, QueueSettings(groups=("g",)), max_block_ms=100, block_margin_s=0.2)
    assert queue.consume("g", "c", block_ms=50) == []  # recovery and first claim sweep done
    redis_server.pause()
    try:
        assert queue.consume("g", "c", block_ms=100) == []
    finally:
        redis_server.resume()


def test_stream_deleted_under_a_blocked_read_is_an_outage_not_a_crash(redis_server: RedisServer) -> None:
    """Redis 7 ends a blocked XREADGROUP with ``UNBLOCKED the stream key no longer exists`` when its stream is
    deleted, or moved to another node by a resharding (tests/cluster/test_failover.py): an outage the worker
    rides through by reconnecting (which declares the group again), never an unknown error that ends it."""
    queue = queue_on(redis_server, groups=("g",))
    assert queue.consume("g", "c", block_ms=10) == []  # recovery and first claim sweep done
    failures: list[BaseException] = []

    def read() -> None:
        try:
            queue.consume("g", "c", block_ms=5000)
        except BaseException as exc:
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    client = redis_server.client()
    wait_until(lambda: int(client.info("clients")["blocked_clients"]) == 1, 10, "the read to block")
    client.delete(queue.settings.stream)
    reader.join(10)
    assert len(failures) == 1 and isinstance(failures[0], BackendUnavailable), failures
    assert "no longer exists" in str(failures[0])
    again = queue_on(redis_server, groups=("g",))  # what the worker does next: a new connection, the group again
    again.publish(make_frames(1)[0])
    assert len(again.consume("g", "c", block_ms=100)) == 1


def test_unknown_lag_after_deletion_is_counted_conservatively(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g", "h"), max_lag=10, publish_timeout_s=0.2)
    ids = queue.publish_many(make_frames(5))
    queue.consume("g", "c", count=2, block_ms=100)
    queue.consume("h", "c", count=3, block_ms=100)
    redis_server.client().xdel(queue.settings.stream, ids[3])
    assert queue.stats("g").lag == 4  # Redis answers nil; the stream length stands in
    queue._backlog_estimate = 10  # force the exact check on the next publish
    # Group h: stream length 4 stands in for its lag, plus 3 pending = 7; 3 more fit exactly.
    queue.publish_many(make_frames(3))
    with pytest.raises(BackpressureTimeout):
        queue.publish(make_frames(1)[0])


def test_reclaim_acks_entries_deleted_while_pending(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g",), claim_min_idle_ms=1)
    ids = queue.publish_many(make_frames(3))
    assert len(queue.consume("g", "dead", count=3, block_ms=100)) == 3
    redis_server.client().xdel(queue.settings.stream, *ids)
    other = queue_on(redis_server, groups=("g",), claim_min_idle_ms=1)
    assert other.consume("g", "live", count=10, block_ms=50) == []
    assert other.stats("g").pending == 0


def test_restart_recovery_acks_own_entries_deleted_meanwhile(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g",))
    ids = queue.publish_many(make_frames(3))
    assert len(queue.consume("g", "w1", count=3, block_ms=100)) == 3
    redis_server.client().xdel(queue.settings.stream, ids[1])
    restarted = queue_on(redis_server, groups=("g",))
    again = restarted.consume("g", "w1", count=3, block_ms=100)
    assert [d.id for d in again] == [ids[0], ids[2]]
    assert restarted.stats("g").pending == 2


def test_nack_without_delay_is_redelivered_on_the_next_consume(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g",), claim_min_idle_ms=60_000)
    queue.publish(make_frames(1)[0])
    (first,) = queue.consume("g", "c", block_ms=100)
    queue.nack(first)
    (again,) = queue.consume("g", "c", block_ms=100)
    assert (again.id, again.attempts) == (first.id, 2)


WRONG_TYPE = (r"^redis://127\.0\.0\.1:\d+/0: key '{key}' holds a {kind}, not a stream: "
              r"choose another FRAME_BUFFER_STREAM or delete the key$")


def test_stream_key_of_the_wrong_type_is_refused(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.set("frame_queue", "not a stream")
    queue = queue_on(redis_server)
    message = WRONG_TYPE.format(key="frame_queue", kind="string")
    operations = {
        "publish": lambda: queue.publish(make_frames(1)[0]), "publish_many": lambda: queue.publish_many(make_frames(3)),
        "consume": lambda: queue.consume("g", "c", block_ms=10), "stats": lambda: queue.stats("g"),
        "ensure_group": lambda: queue.ensure_group("g"),
        "trim": queue.trim,  # housekeeping hides outages, not a stream name that points at something else
    }
    for name, operation in operations.items():
        with pytest.raises(StreamWrongType, match=message) as wrong:
            operation()
        assert wrong.value.exit_code == EXIT_CONFIG, name
    client.delete("frame_queue")
    client.rpush("frame_queue:dlq", "a list")  # the dead-letter stream's key is taken
    queue = queue_on(redis_server, groups=("g",))
    client.xadd("frame_queue", {"h": b"not msgpack", "p": b""})
    message = WRONG_TYPE.format(key="frame_queue:dlq", kind="list")
    for operation in (lambda: queue.consume("g", "c", block_ms=100), queue.dead_letters, lambda: queue.stats("g")):
        with pytest.raises(StreamWrongType, match=message):
            operation()
    client.delete("frame_queue:dlq")
    client.hset("frame_queue:dlq", "a", "hash")
    with pytest.raises(StreamWrongType, match=WRONG_TYPE.format(key="frame_queue:dlq", kind="hash")):
        queue.purge_dead_letters(["1-0"])
    client.delete("frame_queue:dlq")
    restarted = queue_on(redis_server, groups=("g",))  # takes back its pending entry and dead-letters it now
    assert restarted.consume("g", "c", block_ms=100) == []
    (letter,) = restarted.dead_letters()
    assert letter.reason == "bad_header"
    client.delete("frame_queue")
    client.set("frame_queue", "taken again")
    with pytest.raises(StreamWrongType, match=WRONG_TYPE.format(key="frame_queue", kind="string")):
        queue.replay_dead_letters([letter.id])
    assert queue.dead_letters() == [letter], "a replay refused by the server leaves the dead letter in place"
    client.close()


def test_trim_keeps_what_a_group_still_needs(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server)
    assert queue.stats("g").depth == 0
    queue.trim()  # no stream yet
    queue.publish_many(make_frames(4))
    queue.trim()  # no group yet: everything is kept for the first one
    assert queue.stats("g").depth == 4
    queue.ensure_group("g")
    batch = queue.consume("g", "c", count=3, block_ms=100)
    queue.ack(batch[1:])
    queue.trim()
    assert queue.stats("g").depth == 4, "entry 0 is still pending"
    queue.ack(batch[:1])
    queue.trim()
    assert queue.stats("g").depth == 1


def test_backpressure_measures_no_backlog_on_a_stream_not_created_yet(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server)
    assert queue._measure_backlog() == (0, False)


def test_backpressure_on_a_key_of_another_type_is_refused_by_name(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, stream="taken")
    redis.Redis(port=redis_server.port).set("taken", "a string")
    with pytest.raises(StreamWrongType, match=WRONG_TYPE.format(key="taken", kind="string")):
        queue._measure_backlog()


def test_a_trim_riding_on_a_publish_survives_a_flushed_script_cache(redis_server: RedisServer) -> None:
    # A server restarted (or SCRIPT FLUSH) forgets the trim script: the publish still succeeds, the trim reloads it.
    queue = queue_on(redis_server, groups=("g",))
    queue.publish_many(make_frames(2))
    queue.ack(queue.consume("g", "c", count=2, block_ms=100))
    redis.Redis(port=redis_server.port).script_flush()
    queue._last_trim = 0.0  # due
    queue.publish_many(make_frames(1))
    assert queue.stats("g").depth == 1, "the acked entries were trimmed in the publish's round trip"


def test_publishing_trims_after_every_few_megabytes_not_only_twice_a_second(redis_server: RedisServer) -> None:
    # Freeing is done inside XTRIM and blocks Redis for about 0.1 ms per MB: trimming by volume keeps it short.
    queue = queue_on(redis_server, groups=("g",))
    consumer = queue_on(redis_server, groups=("g",))
    queue._last_trim = time.monotonic() + 3600  # the twice-a-second trim never comes in this test
    megabyte = [Frame("cam", i, pattern(i, (1024, 1024))) for i in range(4)]
    queue.publish_many(megabyte[:2])
    consumer.ack(consumer.consume("g", "c", count=2, block_ms=100))
    queue.publish_many(megabyte[2:3])
    assert queue.stats("g").depth == 3, "3 MB published: not trimmed yet"
    queue.publish_many(megabyte[3:4])
    assert queue.stats("g").depth == 2, "4 MB published: the two acked entries are trimmed"


def test_burst_of_malformed_entries_written_with_redis_cli(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, groups=("g",))
    write_malformed_entries(redis_server.port, 1000)
    queue.publish(make_frames(1)[0])
    delivered = []
    deadline = time.monotonic() + 60
    while not delivered:
        assert time.monotonic() < deadline
        batch = queue.consume("g", "c", count=100, block_ms=100)
        queue.ack(batch)
        delivered.extend(batch)
    stats = queue.stats("g")
    reasons: dict[str, int] = {}
    after = None
    while letters := queue.dead_letters(count=500, after=after):
        for letter in letters:
            reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
        after = letters[-1].id
    print(f"published 1 good + 1000 malformed; delivered {len(delivered)}; dead-lettered {sum(reasons.values())}")
    assert len(delivered) == 1 and stats.dead_letters == 1000 and stats.pending == 0
    assert reasons == {"missing_header": 500, "missing_payload": 250, "bad_header": 250}


def test_listing_after_something_that_is_not_an_entry_id(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server)
    with pytest.raises(ValueError, match=r"^after: '1-2-3' is not a Redis stream entry id$"):
        queue.dead_letters(after="1-2-3")
    assert queue.dead_letters(after="18446744073709551615-18446744073709551615") == []


def test_hostile_entries_written_with_raw_xadd_are_dead_lettered(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, stream="s", groups=("g",))
    client = redis_server.client()
    queue.publish(make_frames(1)[0])
    hostile = [
        ({"x": "y"}, "missing_header"),  # neither field
        ({"h": "", "p": ""}, "bad_header"),  # both empty
        ({"h": b"\x00" * 40_000, "p": b"\x01" * 40_000}, "bad_header"),  # large: received into buffers of their own
        ({"h": "5", "p": "5", "H": "x", "P": "y"}, "bad_header"),  # a msgpack int; field names are case-sensitive
        ({"p": b"oldest", "h2": b""}, "missing_header"),
    ]
    for fields, _reason in hostile:
        client.xadd("s", fields)
    client.xadd("s", {"p": b"last"}, id="18446744073709551615-18446744073709551615")  # no id can follow it
    got = queue.consume("g", "c", count=50, block_ms=100)
    queue.ack(got)
    assert [d.frame.seq for d in got] == [0]
    letters = queue.dead_letters()
    assert [x.reason for x in letters] == [reason for _f, reason in hostile] + ["missing_header"]
    assert letters[-1].original_id == "18446744073709551615-18446744073709551615"
    assert bytes(letters[2].payload or b"") == b"\x01" * 40_000
    queue.trim()  # the first id a group has not seen is past the largest one: nothing pending is trimmed
    assert queue.stats("g").pending == 0
    with pytest.raises(QueueError, match=r"^redis://127\.0\.0\.1:\d+/0: stream 's' or 's:dlq' holds an entry with "
                       "the largest possible id"):
        queue.publish(make_frames(1)[0])
    client.close()


def test_foreign_entries_in_the_dead_letter_stream_are_listed(redis_server: RedisServer) -> None:
    queue = queue_on(redis_server, stream="s", groups=("g",))
    client = redis_server.client()
    client.xadd("s:dlq", {"attempts": "junk", "at_ms": "-5", "reason": b"\xff" * 40_000})
    client.xadd("s:dlq", {"attempts": "9" * 30, "h": b"\x01" * 40_000, "group": "g"})
    client.xadd("s:dlq", {"attempts": "3", "at_ms": "17", "p": "x"})
    first, second, third = queue.dead_letters()
    assert (first.attempts, first.dead_lettered_at_ms, len(first.reason)) == (0, 0, 40_000)
    assert (second.attempts, second.header, second.payload) == (0, b"\x01" * 40_000, None)
    assert (third.attempts, third.dead_lettered_at_ms, third.payload) == (3, 17, b"x")
    assert queue.replay_dead_letters([second.id]) == 1  # replayed with an empty payload: dead-lettered again
    assert queue.consume("g", "c", block_ms=100) == []
    assert [x.reason for x in queue.dead_letters()][-1] == "bad_header"
    client.close()
