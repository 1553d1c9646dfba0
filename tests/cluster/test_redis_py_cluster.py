"""What redis-py's ``RedisCluster`` (the version pinned in pyproject.toml) does with the options the Redis backend
gives its standalone client, so that the cluster backend builds on what holds (docs/scaling.md).

The standalone client passes ``parser_class`` (the project's reply reader, ``queue/redis_reader.py``) and a
``command_packer``; ``RedisCluster`` drops both without a word, keeping only the keyword arguments it lists.
A ``connection_class`` that sets them does reach every node's pool, when the client is made with
``RedisCluster.from_url`` (made from ``startup_nodes`` it is refused).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import PythonRespSerializer
from redis.exceptions import RedisClusterException

from frame_buffer.queue.redis_reader import FrameRESP2Parser
from frame_buffer.queue.redis_streams import SOCKET_READ_SIZE
from tests.cluster_servers import RedisClusterServers

pytestmark = pytest.mark.cluster


class FrameConnection(redis.Connection):
    """A connection with the backend's reply reader and Python command packer, as its standalone client has."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["parser_class"] = FrameRESP2Parser
        kwargs["command_packer"] = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)  # type: ignore[no-untyped-call]
        super().__init__(**kwargs)


def _parser_of(client: RedisCluster, key: str) -> type:
    pool = client.get_redis_connection(client.get_node_from_key(key)).connection_pool
    connection = pool.get_connection()
    try:
        return type(connection._parser)
    finally:
        pool.release(connection)


def test_parser_class_is_dropped_but_a_connection_class_from_url_carries_the_reader(
        redis_cluster: RedisClusterServers) -> None:
    key = f"test_{uuid.uuid4().hex[:12]}:{{0}}"
    nodes = [ClusterNode("127.0.0.1", node.port) for node in redis_cluster.nodes]
    dropped = RedisCluster(startup_nodes=nodes, protocol=2, parser_class=FrameRESP2Parser)
    try:
        assert _parser_of(dropped, key) is not FrameRESP2Parser
    finally:
        dropped.close()
    with pytest.raises((TypeError, RedisClusterException), match="connection_class"):  # as the path goes
        RedisCluster(startup_nodes=nodes, protocol=2, connection_class=FrameConnection)
    seed = redis_cluster.seed_urls.split(",")[0]
    client = RedisCluster.from_url(seed, protocol=2, connection_class=FrameConnection,
                                   socket_read_size=SOCKET_READ_SIZE)
    try:
        assert _parser_of(client, key) is FrameRESP2Parser
        payload = bytes(range(256)) * 400  # 100 KB: over the reader's threshold for a buffer of its own
        client.xgroup_create(key, "g", "0", mkstream=True)
        client.xadd(key, {b"h": b"header", b"p": memoryview(payload)})
        fields = client.xreadgroup("g", "c", {key: ">"}, count=1)[0][1][0][1]
        assert isinstance(fields[b"p"], memoryview) and fields[b"p"] == payload  # received straight into place
        assert fields[b"h"] == b"header"
        client.delete(key)
    finally:
        client.close()
