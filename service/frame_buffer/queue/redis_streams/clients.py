"""The redis-py clients of the Redis backend, and which connection a shard's publish runs on.

Both clients read replies with the project's reader (:mod:`frame_buffer.queue.redis_reader`) and pack commands
with redis-py's Python packer. ``RedisCluster`` drops ``parser_class`` and ``command_packer`` without a word,
so in cluster mode a :class:`FrameConnection` class carries them to every node's pool
(``tests/cluster/test_redis_py_cluster.py`` pins this).

A publish is one ``MULTI``/``EXEC`` on one connection, followed by ``WAIT`` on that same connection when
replica acknowledgements are asked for (``WAIT`` counts the writes of its own connection). redis-py's cluster
transaction cannot carry ``WAIT`` (it has no key), and it retries the whole transaction after a connection
error, which writes the batch twice when the ``EXEC`` had run. So a publish goes to the shard's master through
that node's own client (:meth:`Routing.writer`), and a failure goes to the breaker instead of being retried
blind; :meth:`Routing.refresh` re-reads the slot map before the next attempt.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from redis._parsers.encoders import Encoder
from redis.cluster import RedisCluster
from redis.connection import PythonRespSerializer

from frame_buffer.checks import masked_url, server_address
from frame_buffer.queue.base import BackendRefused, BackendUnavailable
from frame_buffer.queue.redis_reader import FrameRESP2Parser

#: Bytes asked of each recv into the reply reader's shared buffer. Measured: 64 KB costs the consumer 10 to 15
#: points more CPU than 1 MB at 640x480x3 (more recv calls), with no gain at 100 KB (docs/performance.md).
SOCKET_READ_SIZE = 1024 * 1024


#: What a seed's refusal of the credentials says (redis-py keeps the reply's text, not always its code).
_REFUSED = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid username-password", "Authentication required")


def _packer() -> PythonRespSerializer:
    return PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)  # type: ignore[no-untyped-call]


class FrameConnection(redis.Connection):
    """A connection with the project's reply reader and the Python command packer (cluster mode's pools)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["parser_class"] = FrameRESP2Parser
        kwargs["command_packer"] = _packer()
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]


def _timeouts(max_block_ms: int, block_margin_s: float) -> dict[str, Any]:
    # The socket timeout stays longer than the longest BLOCK: a blocking read that times out is not a failure.
    return {"socket_timeout": max_block_ms / 1000 + block_margin_s, "socket_connect_timeout": 5.0,
            "health_check_interval": 30, "protocol": 2, "socket_read_size": SOCKET_READ_SIZE}


def standalone_client(url: str, max_block_ms: int, block_margin_s: float) -> Any:
    """A client of one Redis server (typed ``Any``: redis-py's reply types are RESP2/RESP3 unions)."""
    return redis.Redis.from_url(url, parser_class=FrameRESP2Parser, command_packer=_packer(),
                                **_timeouts(max_block_ms, block_margin_s))


def cluster_client(seeds: list[str], max_block_ms: int, block_margin_s: float) -> Any:
    """A client of a Redis Cluster, started from the first seed that answers (all of them are tried).

    Raises :class:`BackendRefused` for a seed that is not a cluster node or refuses the credentials (a wrong
    setting: exit 2), else :class:`BackendUnavailable` naming every seed and why it failed.
    """
    reasons = []
    for seed in seeds:
        address = server_address(seed)
        try:
            return RedisCluster.from_url(seed, connection_class=FrameConnection,
                                         **_timeouts(max_block_ms, block_margin_s))
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            reason = str(exc).rpartition("reachable node: ")[2] or type(exc).__name__
            if "Cluster mode is not enabled" in reason:
                raise BackendRefused(f"redis at {address} ({masked_url(seed)}) is not a Redis Cluster node: set "
                                     "FRAME_BUFFER_REDIS_MODE=standalone, or list cluster nodes") from None
            if any(code in reason for code in _REFUSED):
                raise BackendRefused(f"redis at {address} refused {masked_url(seed)}: {reason} "
                                     "(check the user, password and ACL)") from None
            reasons.append(f"{address}: {reason}")
    raise BackendUnavailable(f"redis cluster unavailable, no seed answered: {'; '.join(reasons)}")


class Routing:
    """Which client runs a shard's publish, and the address to name in errors.

    Args:
        client: the backend's client (``redis.Redis`` or ``RedisCluster``).
        address: ``host:port`` (or socket path) of a standalone server, or the seeds of a cluster.
    """

    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address
        self.cluster = isinstance(client, RedisCluster)

    def writer(self, key: str) -> Any:
        """The client of the master serving ``key``: the client itself on one server."""
        if not self.cluster:
            return self.client
        return self.client.get_redis_connection(self.client.get_node_from_key(key))

    def where(self, key: str) -> str:
        """The address that serves ``key``, for messages."""
        return str(self.client.get_node_from_key(key).name) if self.cluster else self.address

    def refresh(self) -> None:
        """Re-read the slot map (after MOVED or a failed node); a failure is left to the next attempt."""
        if self.cluster:
            with contextlib.suppress(Exception):
                self.client.nodes_manager.initialize()
