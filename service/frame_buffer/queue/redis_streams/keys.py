"""The two keys of a stream (itself and its dead-letter stream) on one client, and the error translation that
every call goes through: what redis-py raises becomes the backend errors of :mod:`frame_buffer.queue.base`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.exceptions import RedisClusterException

from frame_buffer.checks import masked_url
from frame_buffer.queue.base import BackendRefused, BackendUnavailable, QueueError, StreamWrongType
from frame_buffer.queue.redis_streams.entries import id_to_str

T = TypeVar("T")
#: Error codes of replies that mean the server refused these credentials or this user a command.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM")
#: Replies of a Redis Cluster during a failover or a resharding: the slot map is changing, try again later.
_FAILOVER_CODES = ("CLUSTERDOWN", "MOVED", "ASK", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS")
_FAILING_OVER = (redis.exceptions.ClusterError, redis.exceptions.AskError, redis.exceptions.TryAgainError)


def standalone_address(client: Any) -> str:
    """``host:port`` or the socket path of a ``redis.Redis`` client, for messages."""
    kwargs = client.connection_pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}")


class StreamKeys:
    """A stream and its dead-letter stream on ``client`` (typed ``Any``: redis-py's reply types are RESP2/RESP3
    unions; replies are parsed in this package)."""

    def __init__(self, client: Any, url: str, stream: str, dlq: str, address: str | None = None) -> None:
        self.client = client
        self.display_url = masked_url(url)
        self.address = address or standalone_address(client)
        self.stream = stream
        self.dlq = dlq

    def call(self, fn: Callable[[], T]) -> T:
        """Run a Redis call, turning connection-level failures into :class:`BackendUnavailable`, refused
        credentials or permissions into :class:`BackendRefused`, a key of the wrong type into
        :class:`StreamWrongType`."""
        try:
            return fn()
        except redis.RedisError as exc:
            mine = self._translate(exc)
            if mine is None:
                raise  # OOM and BUSYGROUP are the caller's to handle; anything else is a bug
            raise mine from exc
        except RedisClusterException as exc:  # not a RedisError: no slot map, no node for a slot
            raise BackendUnavailable(f"redis cluster at {self.address} unavailable: {exc}") from exc

    def _translate(self, exc: redis.RedisError) -> QueueError | None:
        """The error of ours that ``exc`` stands for, if any."""
        # A pipeline's error says which command failed first ("Command # 1 (XADD ...) of pipeline caused error:").
        text = str(exc).rpartition(" of pipeline caused error: ")[2]
        # redis-py names the code in ``status_code`` where it maps the reply to a class of its own; a reply it
        # leaves a plain ResponseError (WRONGTYPE) starts with the code instead.
        code = getattr(exc, "status_code", None) or text.partition(" ")[0]
        if code in _REFUSALS or isinstance(exc, (redis.AuthenticationError, redis.exceptions.AuthorizationError)):
            reason = text if text.startswith(str(code)) else f"{code} {text}"
            return BackendRefused(
                f"redis at {self.address} refused {self.display_url}: {reason} (check the user, password and ACL)")
        if code == "READONLY":  # a replica (a primary demoted by a failover, or the wrong address)
            return BackendRefused(f"redis at {self.address} refused {self.display_url}: READONLY {text} "
                                  "(a replica: point the URL at the primary)")
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):  # BusyLoadingError (LOADING) included
            return BackendUnavailable(f"redis at {self.address} unavailable: {exc}")
        if isinstance(exc, _FAILING_OVER) or code in _FAILOVER_CODES:
            # a Redis Cluster between a node's failure and its replica's promotion, or a slot on the move
            return BackendUnavailable(f"redis cluster at {self.address} unavailable: {code} {text}")
        if code == "WRONGTYPE":
            return self._wrong_type()
        if "exhausted the last possible ID" in text:  # someone wrote an entry with the largest id (raw XADD)
            return QueueError(f"{self.display_url}: stream {self.stream!r} or {self.dlq!r} holds an entry with "
                              "the largest possible id, after which nothing can be added: delete that key or "
                              "choose another FRAME_BUFFER_STREAM")
        return None

    def _not_a_stream(self) -> tuple[str, str] | None:
        """The first of the stream's two keys (itself, its dead-letter stream) that holds something else, with
        the type it holds; None when both are streams or absent."""
        keys = (self.stream, self.dlq)
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
        kinds = [id_to_str(kind) for kind in pipe.execute()]
        return next(((key, kind) for key, kind in zip(keys, kinds, strict=True) if kind not in ("stream", "none")),
                    None)

    def _wrong_type(self) -> StreamWrongType:
        """The error for a WRONGTYPE reply, naming the key that is not a stream and what it holds."""
        found = None
        with contextlib.suppress(redis.RedisError):  # then the report is the WRONGTYPE, told less precisely
            found = self._not_a_stream()
        key, kind = found or (self.stream, "value of another type")
        return StreamWrongType(f"{self.display_url}: key {key!r} holds a {kind}, not a stream: "
                               "choose another FRAME_BUFFER_STREAM or delete the key")

    def check_keys(self) -> None:
        """Refuse before a MULTI that moves an entry between the two keys: WRONGTYPE is an error at EXEC
        time, which does not abort a transaction, so the XACK or XDEL after a failed XADD would still run and
        the entry would be lost."""
        if self._not_a_stream() is not None:
            raise self._wrong_type()

    def groups(self) -> list[dict[str, Any]]:
        """XINFO GROUPS of the stream; none while the stream does not exist (one round trip either way)."""
        try:
            return list(self.client.xinfo_groups(self.stream))
        except redis.ResponseError as exc:
            if "no such key" not in str(exc):
                raise  # WRONGTYPE and the like are the caller's to report
            return []
