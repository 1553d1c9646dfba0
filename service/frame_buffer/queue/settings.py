"""What every backend is configured with, and the default servers: each field, default and check once.

:class:`QueueOptions` are the queue's settings a user sets (``FRAME_BUFFER_STREAM``, ``FRAME_BUFFER_MAX_LAG``,
...); the service's ``config.Settings`` is built on them rather than repeating them. :class:`QueueSettings`
adds the groups a command declares. The checks are in the annotations (see ``frame_buffer.checks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from frame_buffer.checks import ABSOLUTE_PATH, DAY_S, NAME, Bound, field_problems
from frame_buffer.codec import SLOT_ALIGN

#: The local Redis and RabbitMQ every command talks to unless told otherwise.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_STREAM = "frame_queue"

Backend = Literal["redis", "rabbitmq", "memory"]
#: Where payloads travel: in the stream entry, or in a same-host shared-memory store (issue 18).
PayloadStore = Literal["inline", "shm"]
DEFAULT_SHM_DIR = "/dev/shm/frame-buffer"
DEFAULT_SHM_BYTES = 1024 * 1024 * 1024
#: The backend names, in the order messages list them.
BACKENDS: tuple[str, ...] = get_args(Backend)

__all__ = ["BACKENDS", "DEFAULT_AMQP_URL", "DEFAULT_REDIS_URL", "DEFAULT_SHM_BYTES", "DEFAULT_SHM_DIR",
           "DEFAULT_STREAM", "Backend", "PayloadStore", "QueueOptions", "QueueSettings", "RedisOptions"]


@dataclass(frozen=True)
class QueueOptions:
    """The queue's settings a user sets; a wrong value raises ``ValueError('<field>: <reason>')``.

    Args:
        stream: the stream (Redis) or exchange (RabbitMQ) name; the dead-letter queue is ``<stream>:dlq``.
        max_lag: publish waits while some group's backlog (lag + pending) is at least this many entries.
        publish_timeout_s: how long publish waits under backpressure before ``BackpressureTimeout``.
        claim_min_idle_ms: a pending entry idle this long is reclaimed by another consumer of its group.
        max_deliveries: an entry delivered more often than this is dead-lettered (``delivery_limit``).
        payload_store: ``inline`` (the payload in the stream entry) or ``shm`` (the ``redis`` backend on one
            standalone stream keeps payloads in a same-host shared-memory store and the entry carries a
            reference: docs/wire-format.md section 9); other backends ignore it.
        shm_bytes: the ``shm`` store's size per stream, in bytes (a full store is backpressure).
        shm_dir: the directory of the ``shm`` stores (a tmpfs), absolute; one subdirectory per stream.
    """

    stream: Annotated[str, NAME] = DEFAULT_STREAM
    max_lag: Annotated[int, Bound(1, 1_000_000_000)] = 10_000
    publish_timeout_s: Annotated[float, Bound(0, DAY_S)] = 30.0
    claim_min_idle_ms: Annotated[int, Bound(1, DAY_S * 1000)] = 30_000
    max_deliveries: Annotated[int, Bound(1, 1000)] = 5
    payload_store: PayloadStore = "inline"
    shm_bytes: Annotated[int, Bound(1 << 20, 1 << 40)] = DEFAULT_SHM_BYTES
    shm_dir: Annotated[str, ABSOLUTE_PATH] = DEFAULT_SHM_DIR

    def __post_init__(self) -> None:
        for name, reason in field_problems(self):
            raise ValueError(f"{name}: {reason}")

    def store_problems(self, backend: str, mode: str, shards: int,
                       max_frame_bytes: int) -> Iterator[tuple[str, str, tuple[str, ...]]]:
        """Why the payload store cannot serve this backend, layout and frame size, as (setting, reason, related)."""
        if self.payload_store != "shm":
            return
        if backend != "redis" or mode == "cluster" or shards > 1:
            yield ("payload_store", "shm works with the redis backend on one stream (redis_mode standalone, "
                   "shards 1) only", ("backend", "redis_mode", "shards"))
        if self.shm_bytes < max_frame_bytes + SLOT_ALIGN:  # a slot: a 64-byte header and the payload
            yield ("shm_bytes", f"must hold the largest frame, at least max_frame_bytes + {SLOT_ALIGN} = "
                   f"{max_frame_bytes + SLOT_ALIGN}, got {self.shm_bytes}", ("max_frame_bytes",))


@dataclass(frozen=True)
class QueueSettings(QueueOptions):
    """What every backend is configured with: :class:`QueueOptions` and the groups to declare.

    Args:
        groups: consumer groups declared up front, so frames published before a consumer starts are kept.
    """

    groups: tuple[str, ...] = ()

    @property
    def dead_letter_stream(self) -> str:
        """Name of the dead-letter queue."""
        return f"{self.stream}:dlq"


@dataclass(frozen=True)
class RedisOptions:
    """How the ``redis`` backend lays its streams out and how durable a publish is (docs/scaling.md).

    Args:
        mode: ``standalone`` (one server) or ``cluster`` (a Redis Cluster; the URL lists seed nodes).
        shards: shard streams; 1 on one server is the single stream of before.
        replica_acks: ``WAIT`` for this many replicas after each publish; fewer in time is a failed publish.
        replica_timeout_ms: how long that ``WAIT`` may take.
    """

    mode: Literal["standalone", "cluster"] = "standalone"
    shards: int = 1
    replica_acks: int = 0
    replica_timeout_ms: int = 1000
