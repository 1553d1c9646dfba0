"""RabbitMQ backend: a durable topic exchange per stream, a durable queue per consumer group.

Topology for ``settings.stream = S`` (docs/backend-comparison.md has the why of each choice):

* exchange ``S`` (topic, durable), routing key ``frames.<camera>``; its alternate exchange ``S:unrouted``
  (fanout) feeds the queue ``S:unrouted``, which holds frames published while no group queue is bound.
  The first group created takes them over, as a Redis group created at id 0 takes the stream's entries.
* group ``G`` is the queue ``S.G`` bound with ``frames.#``: a quorum queue by default (classic by option),
  ``x-max-length = max_lag + confirm_window`` with ``x-overflow = reject-publish`` (a full queue nacks the
  publish: backpressure, never a drop; publish itself holds the backlog to ``max_lag``, the broker's limit
  is the backstop for producers that do not know a group), dead-lettering to ``S:dlq`` and, on quorum
  queues, ``x-delivery-limit = max_deliveries + 1`` as a backstop only: :meth:`FrameQueue.consume`
  dead-letters past ``max_deliveries`` itself, with the reason.
* ``S.G.retry.<ms>``: delay queues for :meth:`RabbitMQQueue.nack` with a delay (message TTL, dead-lettered back
  to ``S.G``).
* ``S:dlq``: a classic durable queue, listed by ``basic.get`` without ack and requeued (classic queues put
  requeued messages back in place, so the listing order is stable).

Messages are persistent, published with ``mandatory`` and publisher confirms, up to ``confirm_window`` in
flight; ``publish_many`` returns once every frame of the batch is confirmed. The codec header travels in the
AMQP headers (``h``) and the payload is the body, passed to pika as the codec's buffer: pika still copies it
once per AMQP body frame (``frame_max``, 128 KiB) while framing, as it does for any publisher.

Consumers subscribe with ``basic.consume`` and a prefetch; ``attempts`` is ``1 + x-delivery-count`` (quorum;
``redelivered`` on classic queues) plus the attempts carried in ``x-fb-attempts`` by a delayed nack's
republish. AMQP keeps a delivery with its channel, not with a consumer name: frames come back to the group
when the consumer's connection closes (process death, heartbeat timeout), not after ``claim_min_idle_ms``.

The modules, one concept each: :mod:`.queue` (the :class:`RabbitMQQueue` that wires the others),
:mod:`.connection` (the connection, reconnection with backoff), :mod:`.publisher` (publisher confirms),
:mod:`.topology` (names, arguments, declarations), :mod:`.consumer` (subscriptions, acks, nacks),
:mod:`.dead_letters` (``S:dlq``), :mod:`.messages` (what a message carries) and :mod:`.pika_compat` (every
use of a pika internal).
"""

from frame_buffer.checks import masked_url
from frame_buffer.queue.rabbitmq.connection import QueueType
from frame_buffer.queue.rabbitmq.messages import ATTEMPTS, HEADER
from frame_buffer.queue.rabbitmq.queue import RabbitMQQueue
from frame_buffer.queue.rabbitmq.topology import DELAY_STEPS_MS, delay_step_ms, delete_topology, topology

__all__ = [
    "ATTEMPTS",
    "DELAY_STEPS_MS",
    "HEADER",
    "QueueType",
    "RabbitMQQueue",
    "delay_step_ms",
    "delete_topology",
    "masked_url",
    "topology",
]
