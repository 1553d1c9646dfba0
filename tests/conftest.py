"""Fixtures shared by the whole suite: backends, unique stream names, throwaway servers."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from frame_buffer.codec import FrameCodec
from frame_buffer.queue import FrameQueue, QueueSettings, RedisOptions, open_queue
from frame_buffer.queue.redis_streams.shards import ShardLayout
from frame_buffer.wake_latency import current_bound_us
from tests.cluster_servers import RedisClusterServers
from tests.servers import RedisServer

REDIS_URL = os.environ.get("FB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FB_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Backends the conformance suite runs against: ``redis-shards`` is the redis backend with 4 shard streams on
#: one server, ``redis-cluster`` the redis backend in cluster mode (16 shards) on the six-node test cluster.
BACKENDS = ["memory", "redis", "redis-shards", "redis-cluster", "rabbitmq"]
#: The redis backend's options of each redis variant.
REDIS_VARIANTS = {"redis": RedisOptions(), "redis-shards": RedisOptions(shards=4),
                  "redis-cluster": RedisOptions(mode="cluster", shards=16)}

QueueFactory = Callable[..., FrameQueue]
#: Group names the conformance suite uses: their queues are deleted after each rabbitmq test.
_RABBITMQ_TEST_GROUPS = ("g", "analytics", "archive", "late", "first", "nobody", "unknown")


@pytest.fixture
def unbounded() -> int:
    """The machine's wake-up latency bound before the test; a test of a request needs a looser one to see it."""
    before = current_bound_us()
    assert before > 3, f"something else on the machine holds a wake-up latency bound of {before} us"
    return before


@pytest.fixture
def stream_name() -> str:
    """A stream name no other test uses."""
    return f"test_{uuid.uuid4().hex[:12]}"


def _cleanup(backend: str, stream: str, url: str) -> None:
    if backend in REDIS_VARIANTS:
        cluster = backend == "redis-cluster"
        client = RedisCluster.from_url(url.split(",", maxsplit=1)[0]) if cluster else redis.Redis.from_url(url)
        options = REDIS_VARIANTS[backend]
        layout = ShardLayout(stream, options.shards, options.mode == "cluster")
        for keys in layout.shard_keys():
            client.delete(*keys)
        client.close()
    if backend == "rabbitmq":
        from frame_buffer.queue.rabbitmq import delete_topology

        delete_topology(AMQP_URL, QueueSettings(stream=stream), groups=_RABBITMQ_TEST_GROUPS)


@pytest.fixture(params=[pytest.param(b, marks=pytest.mark.cluster) if b == "redis-cluster" else b for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The server URL of ``backend`` (for ``redis-cluster``: the test cluster's seeds, starting it if needed)."""
    if backend == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster").seed_urls)
    return AMQP_URL if backend == "rabbitmq" else REDIS_URL


def open_backend(backend: str, url: str, settings: QueueSettings, codec: FrameCodec | None = None) -> FrameQueue:
    """Open a queue of one of :data:`BACKENDS` (a redis variant opens the redis backend with its options)."""
    if backend in REDIS_VARIANTS:
        return open_queue("redis", redis_url=url, settings=settings, codec=codec,
                          redis_options=REDIS_VARIANTS[backend])
    return open_queue(backend, redis_url=url, amqp_url=url, settings=settings, codec=codec)


@pytest.fixture
def make_queue(backend: str, backend_url: str, stream_name: str) -> Iterator[QueueFactory]:
    """Open queues on the test's backend and stream; all closed and cleaned up afterwards.

    Queues made by one test share the stream (and, for ``memory``, the one in-process instance).
    """
    opened: list[FrameQueue] = []
    shared: dict[str, FrameQueue] = {}
    lock = threading.Lock()  # tests call make() from several threads

    def make(codec: FrameCodec | None = None, **overrides: object) -> FrameQueue:
        settings = QueueSettings(stream=stream_name, **overrides)  # type: ignore[arg-type]
        if backend == "memory":
            # One process, one memory queue: later "connections" see the first one's state.
            with lock:
                if "q" not in shared:
                    shared["q"] = open_queue("memory", settings=settings, codec=codec)
                queue = shared["q"]
                queue.settings = settings
            return queue
        queue = open_backend(backend, backend_url, settings, codec)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
    _cleanup(backend, stream_name, backend_url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (AOF appendfsync always), stopped afterwards."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _redis_cluster_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """One six-node cluster for the whole session: forming one takes seconds."""
    servers = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_cluster(_redis_cluster_servers: RedisClusterServers) -> RedisClusterServers:
    """A six-node Redis Cluster of our own (3 masters, 3 replicas), whole when the test starts: nodes a
    previous test killed are restarted first. Tests share it, so each uses key names of its own."""
    _redis_cluster_servers.ensure_healthy()
    return _redis_cluster_servers
