"""The sharded Redis queue on one server (``FRAME_BUFFER_SHARDS`` > 1): what the conformance suite does not
reach. A batch partly stored across shards, a reader that fails, what readers held at close, dead letters
paged across shards, the queue's own keys. Real servers only; the cluster side is in tests/cluster."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from frame_buffer.frame import Frame
from frame_buffer.queue import BackendUnavailable, QueueSettings, StreamWrongType
from frame_buffer.queue.redis_streams import RedisStreamsQueue, ShardedStreamsQueue
from frame_buffer.queue.redis_streams.readers import Handoff
from frame_buffer.queue.redis_streams.sharded import split_id
from frame_buffer.queue.redis_streams.shards import ShardLayout
from tests.conftest import REDIS_URL
from tests.frames import make_frames, pattern
from tests.servers import RedisServer, wait_until

SHARDS = 4


def _cameras_on_every_shard(shards: int = SHARDS) -> list[str]:
    """One camera name per shard, in shard order."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < shards:
        camera = f"cam{index}"
        found.setdefault(ShardLayout("s", shards).shard_of(camera), camera)
        index += 1
    return [found[shard] for shard in range(shards)]


@pytest.fixture
def stream() -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(*(key for keys in ShardLayout(name, SHARDS).shard_keys() for key in keys))
    client.close()


def _open(stream: str, url: str = REDIS_URL, **settings: object) -> ShardedStreamsQueue:
    return ShardedStreamsQueue(url, QueueSettings(stream=stream, **settings),  # type: ignore[arg-type]
                               shards=SHARDS, cluster=False, max_block_ms=500)


def _frames(cameras: list[str]) -> list[Frame]:
    """One frame per camera given, in that order."""
    return [Frame(camera=camera, seq=0, data=pattern(0, (8, 8, 3))) for camera in cameras]


def _frames_on_every_shard() -> list[Frame]:
    return _frames(_cameras_on_every_shard())


def test_a_batch_refused_by_one_shard_names_what_earlier_shards_stored(stream: str) -> None:
    cameras = _cameras_on_every_shard()
    client = redis.Redis.from_url(REDIS_URL)
    client.set(ShardLayout(stream, SHARDS).stream_key(2), "not a stream")  # shard 2 refuses (WRONGTYPE)
    with _open(stream) as queue:
        frames = _frames(cameras + cameras)  # cameras of shards 0, 1, 2, 3, 0, 1, 2, 3
        with pytest.raises(StreamWrongType) as refused:
            queue.publish_many(frames)
        assert refused.value.written == (0, 1, 4, 5)  # shards 0 and 1 went first and stored their part
        assert [client.xlen(ShardLayout(stream, SHARDS).stream_key(shard)) for shard in (0, 1, 3)] == [2, 2, 0]
    client.close()


def test_a_shard_key_of_another_type_refuses_the_open_and_closes_the_client(stream: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set(ShardLayout(stream, SHARDS).stream_key(1), "not a stream")
    before = client.info("clients")["connected_clients"]
    with pytest.raises(StreamWrongType, match="holds a string"):
        _open(stream, groups=("g",))
    assert client.info("clients")["connected_clients"] == before  # no connection left open
    client.close()


def test_backlog_is_measured_per_shard_and_keys_are_the_queues_own(stream: str) -> None:
    with _open(stream) as queue:
        assert queue.existing_keys() == set()
        queue.publish_many(_frames_on_every_shard() + make_frames(2))  # cam0 twice more
        backlog, waiting = queue._measure_backlog()
        assert (backlog, waiting) == (max(s.depth for s in queue.shard_stats("nobody")), True)
        queue._pause(0.0)  # the hook base publish would wait with: each shard waits for itself instead
        layout = ShardLayout(stream, SHARDS)
        assert queue.existing_keys() == {layout.stream_key(shard) for shard in range(SHARDS)}
        assert set(queue.key_names()) == {key for keys in layout.shard_keys() for key in keys}
        assert queue.used_memory_bytes() > 0
        assert queue.delete_keys() == SHARDS
        assert queue.existing_keys() == set()


def test_a_reader_whose_server_dies_raises_in_consume_and_a_new_one_reads_after_it_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        queue = _open("dying", url=server.url, groups=("g",))
        assert queue.consume("g", "c", count=4, block_ms=50) == []  # the readers are blocked on their shards
        server.kill()
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{server.port}"):
            queue.consume("g", "c", count=4, block_ms=30_000)  # a reader hands its error over at once
        server.start()
        queue.ensure_group("g")
        queue.publish_many(_frames_on_every_shard())
        got: list[str] = []

        def consumed() -> bool:
            with contextlib.suppress(BackendUnavailable):  # each reader that failed while down reports it once
                got.extend(d.frame.camera for d in queue.consume("g", "c", count=4, block_ms=200))
            return len(got) == SHARDS

        wait_until(consumed, 30, "frames from every shard after the restart")
        assert sorted(got) == sorted(_cameras_on_every_shard())
        queue.close()
    finally:
        server.stop()


def test_what_readers_held_at_close_is_given_back_for_another_consumer_at_once(stream: str) -> None:
    queue = _open(stream, groups=("g",), claim_min_idle_ms=60_000)
    assert queue.consume("g", "leaving", count=1, block_ms=50) == []
    client = redis.Redis.from_url(REDIS_URL)

    def blocked_readers() -> int:
        return sum(1 for c in client.client_list() if c["cmd"] == "xreadgroup" and "b" in c["flags"])

    wait_until(lambda: blocked_readers() >= SHARDS, 30, "every shard reader blocked in XREADGROUP")
    queue.publish_many(_frames_on_every_shard())
    readers = queue._readers[("g", "leaving")]
    wait_until(lambda: len(readers.handoff._batches) == SHARDS, 30, "a batch from every shard in the hand-off")
    queue.close()  # nobody took them: given back with the claim idle time already passed
    with _open(stream, groups=("g",), claim_min_idle_ms=60_000) as other:
        got = []

        def all_back() -> bool:
            got.extend(other.consume("g", "staying", count=SHARDS, block_ms=200))
            return len(got) == SHARDS

        wait_until(all_back, 30, "the given-back frames")
        assert sorted(d.frame.camera for d in got) == sorted(_cameras_on_every_shard())
        assert all(d.attempts == 2 for d in got)
    client.close()


def test_dead_letters_page_across_shards_by_id_then_shard(stream: str) -> None:
    layout = ShardLayout(stream, SHARDS)
    client = redis.Redis.from_url(REDIS_URL)
    # Anyone can XADD to a dead-letter stream: equal ids on several shards, and the smallest id there is.
    for shard, ids in {0: ["0-1", "5-0", "7-3"], 1: ["5-0", "7-2"], 3: ["0-1", "7-3"]}.items():
        for entry_id in ids:
            client.xadd(layout.dead_letter_key(shard), {"reason": "x"}, id=entry_id)
    expected = ["0/0-1", "3/0-1", "0/5-0", "1/5-0", "1/7-2", "0/7-3", "3/7-3"]
    with _open(stream) as queue:
        assert [letter.id for letter in queue.dead_letters()] == expected
        paged, after = [], None
        while page := queue.dead_letters(count=1, after=after):
            paged.append(page[0].id)
            after = page[0].id
        assert paged == expected
        assert [letter.id for letter in queue.dead_letters(after="1/0-0")] == expected  # 0-0 itself is no entry
        with pytest.raises(ValueError, match="not an id of this queue"):
            queue.dead_letters(after="5-0")
        assert queue.purge_dead_letters(["9/5-0", "99999/5-0", "1/5-0"]) == 1  # no shard 9: not found
        assert queue.replay_dead_letters(["0/0-1", "0/0-1"]) == 1
        assert "{<tag>}:dlq" in queue.dead_letter_name
    client.close()


@pytest.mark.parametrize("text", ["0/1-0", "12/5-3", "1023/18446744073709551615-0"])
def test_ids_of_this_queue_split_into_shard_and_entry(text: str) -> None:
    shard, entry_id = text.split("/")
    assert split_id(text) == (int(shard), entry_id)


@pytest.mark.parametrize("text", ["", "5-0", "/5-0", "a/5-0", "-1/5-0", "12345/5-0", "1/", "1/x", "1/5-0/2",
                                  "\u0661/5-0", None, 7])
def test_other_ids_do_not_split(text: object) -> None:
    assert split_id(text) is None  # type: ignore[arg-type]


def test_the_handoff_returns_only_batches_at_close_and_stops_readers() -> None:
    handoff = Handoff()
    handoff.put(0, [])
    handoff.put(1, RuntimeError("a reader failed"))
    assert handoff.close() == [(0, [])]
    assert handoff.wait_turn(0) is False and handoff.take(0.0) is None
    handoff.put(2, [])  # a reader finishing after the close is dropped
    assert handoff.close() == []


def test_one_stream_queue_names_its_keys(stream: str) -> None:
    with RedisStreamsQueue(REDIS_URL, QueueSettings(stream=stream)) as queue:
        queue.publish_many(make_frames(1))
        assert queue.key_names() == [stream, f"{stream}:dlq"]
        assert queue.existing_keys() == {stream}
        assert queue.delete_keys() == 1


def test_readers_whose_block_ends_empty_read_again_while_the_consumer_waits(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    admin = server.client()
    try:
        with ShardedStreamsQueue(server.url, QueueSettings(stream="quiet", groups=("g",)), shards=SHARDS,
                                 cluster=False, max_block_ms=20) as queue:

            def reads() -> int:
                assert queue.consume("g", "c", count=1, block_ms=50) == []  # nothing ever published
                return int(admin.info("commandstats").get("cmdstat_xreadgroup", {}).get("calls", 0))

            wait_until(lambda: reads() > 3 * SHARDS, 30, "every reader blocking again after empty reads")
    finally:
        admin.close()
        server.stop()


@given(shard=st.integers(0, 1023), ms=st.integers(0, 2**64 - 1), seq=st.integers(0, 2**64 - 1))
def test_every_id_this_queue_makes_splits_back(shard: int, ms: int, seq: int) -> None:
    assert split_id(f"{shard}/{ms}-{seq}") == (shard, f"{ms}-{seq}")


@given(st.text())
def test_splitting_any_text_never_raises_and_only_ids_split(text: str) -> None:
    found = split_id(text)
    if found is not None:
        shard, entry_id = text.split("/", 1)
        assert shard.isascii() and int(shard) == found[0] < 10_000 and entry_id == found[1]
