"""What every backend is configured with, and the default servers: each field, default and check once.

:class:`QueueOptions` are the queue's settings a user sets (``FRAME_BUFFER_STREAM``, ``FRAME_BUFFER_MAX_LAG``,
...); the service's ``config.Settings`` is built on them rather than repeating them. :class:`QueueSettings`
adds the groups a command declares. The checks are in the annotations (see ``frame_buffer.checks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from frame_buffer.checks import DAY_S, NAME, Bound, field_problems

#: The local Redis and RabbitMQ every command talks to unless told otherwise.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_STREAM = "frame_queue"

Backend = Literal["redis", "rabbitmq", "memory"]
#: The backend names, in the order messages list them.
BACKENDS: tuple[str, ...] = get_args(Backend)

__all__ = ["BACKENDS", "DEFAULT_AMQP_URL", "DEFAULT_REDIS_URL", "DEFAULT_STREAM", "Backend", "QueueOptions",
           "QueueSettings", "RedisOptions"]


@dataclass(frozen=True)
class QueueOptions:
    """The queue's settings a user sets; a wrong value raises ``ValueError('<field>: <reason>')``.

    Args:
        stream: the stream (Redis) or exchange (RabbitMQ) name; the dead-letter queue is ``<stream>:dlq``.
        max_lag: publish waits while some group's backlog (lag + pending) is at least this many entries.
        publish_timeout_s: how long publish waits under backpressure before ``BackpressureTimeout``.
        claim_min_idle_ms: a pending entry idle this long is reclaimed by another consumer of its group.
        max_deliveries: an entry delivered more often than this is dead-lettered (``delivery_limit``).
    """

    stream: Annotated[str, NAME] = DEFAULT_STREAM
    max_lag: Annotated[int, Bound(1, 1_000_000_000)] = 10_000
    publish_timeout_s: Annotated[float, Bound(0, DAY_S)] = 30.0
    claim_min_idle_ms: Annotated[int, Bound(1, DAY_S * 1000)] = 30_000
    max_deliveries: Annotated[int, Bound(1, 1000)] = 5

    def __post_init__(self) -> None:
        for name, reason in field_problems(self):
            raise ValueError(f"{name}: {reason}")


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
