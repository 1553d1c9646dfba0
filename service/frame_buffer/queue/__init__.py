"""The :class:`FrameQueue` interface and its backends (``redis``, ``rabbitmq``, ``memory``)."""

from frame_buffer.codec import FrameCodec
from frame_buffer.queue.base import (
    BackendRefused,
    BackendUnavailable,
    BackpressureTimeout,
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueError,
    QueueStats,
    StreamWrongType,
)
from frame_buffer.queue.settings import DEFAULT_AMQP_URL, DEFAULT_REDIS_URL, QueueSettings, RedisOptions

__all__ = [
    "DEFAULT_AMQP_URL",
    "DEFAULT_REDIS_URL",
    "BackendRefused",
    "BackendUnavailable",
    "BackpressureTimeout",
    "DeadLetter",
    "Delivery",
    "FrameQueue",
    "QueueError",
    "QueueSettings",
    "QueueStats",
    "RedisOptions",
    "StreamWrongType",
    "open_queue",
]


def open_queue(
    backend: str,
    *,
    redis_url: str = DEFAULT_REDIS_URL,
    amqp_url: str = DEFAULT_AMQP_URL,
    settings: QueueSettings | None = None,
    codec: FrameCodec | None = None,
    redis_options: RedisOptions | None = None,
) -> FrameQueue:
    """Open a queue on ``backend`` (``redis``, ``rabbitmq`` or ``memory``).

    Args:
        backend: which backend; an unknown name raises ``ValueError`` naming the choices.
        redis_url: server of the ``redis`` backend.
        amqp_url: broker of the ``rabbitmq`` backend.
        settings: stream, groups and limits shared by every backend.
        codec: wire codec (checksum, compression, maximum frame size).
        redis_options: mode (standalone or cluster), shard streams and replica acknowledgements of ``redis``.
    """
    if backend == "redis":
        from frame_buffer.queue.redis_streams import RedisStreamsQueue, ShardedStreamsQueue

        options = redis_options or RedisOptions()
        if options.mode == "cluster" or options.shards > 1:
            return ShardedStreamsQueue(redis_url, settings, codec, shards=options.shards,
                                       cluster=options.mode == "cluster", replica_acks=options.replica_acks,
                                       replica_timeout_ms=options.replica_timeout_ms)
        return RedisStreamsQueue(redis_url, settings, codec, replica_acks=options.replica_acks,
                                 replica_timeout_ms=options.replica_timeout_ms)
    if backend == "memory":
        from frame_buffer.queue.memory import MemoryQueue

        return MemoryQueue(settings, codec)
    if backend == "rabbitmq":
        from frame_buffer.queue.rabbitmq import RabbitMQQueue

        return RabbitMQQueue(amqp_url, settings, codec)
    raise ValueError(f"backend: must be one of redis, rabbitmq, memory; got {backend!r}")
