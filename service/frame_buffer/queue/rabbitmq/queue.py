""":class:`RabbitMQQueue`: the :class:`FrameQueue` interface on the parts of this package.

It owns the parts (connection, publisher, topology, consumer, dead letters), wires them to one another, and
adds what needs more than one of them: backpressure (the backlog of the slowest group) and ``stats``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence

from frame_buffer.backoff import ExponentialBackoff
from frame_buffer.codec import EncodedFrame, FrameCodec
from frame_buffer.queue.base import (
    BackendUnavailable,
    DeadLetter,
    Delivery,
    FrameQueue,
    QueueSettings,
    QueueStats,
    RawEntry,
)
from frame_buffer.queue.rabbitmq.connection import Link, QueueType, Tuning
from frame_buffer.queue.rabbitmq.consumer import Consumer
from frame_buffer.queue.rabbitmq.dead_letters import DeadLetters
from frame_buffer.queue.rabbitmq.messages import HEADER, MessageIds, persistent
from frame_buffer.queue.rabbitmq.publisher import Message, Publisher
from frame_buffer.queue.rabbitmq.topology import Topology
from frame_buffer.queue.settings import DEFAULT_AMQP_URL


class RabbitMQQueue(FrameQueue):
    """:class:`FrameQueue` on a RabbitMQ broker (see the package docstring for the topology).

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        settings: stream name, groups, limits (see :class:`QueueSettings`).
        codec: the wire codec.
        queue_type: ``quorum`` (replicated, delivery counting) or ``classic`` (one node, lighter).
        prefetch: deliveries a consumer holds unacked at most (at least the ``count`` it asks for); capped at
            a quarter of ``max_lag`` so that consumers' holdings leave room in the backlog bound.
        confirm_window: published messages awaiting their confirm at most.
        confirm_timeout_s: how long a publish waits for the broker's confirms before it reports an outage.
        poll_s: how often publish re-checks the backlog while it waits under backpressure.
        heartbeat_s: AMQP heartbeat; a silent peer is declared dead after two.
        backoff_s: first and longest wait between reconnection attempts after a failed one (exponential).
    """

    backend = "rabbitmq"

    def __init__(
        self,
        url: str = DEFAULT_AMQP_URL,
        settings: QueueSettings | None = None,
        codec: FrameCodec | None = None,
        *,
        queue_type: QueueType = "quorum",
        prefetch: int = 64,
        confirm_window: int = 256,
        confirm_timeout_s: float = 10.0,
        poll_s: float = 0.01,
        heartbeat_s: int = 60,
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        super().__init__(settings, codec)
        if queue_type not in ("quorum", "classic"):
            raise ValueError(f"queue_type: must be 'quorum' or 'classic', got {queue_type!r}")
        self.tuning = Tuning(queue_type, max(1, min(prefetch, self.settings.max_lag // 4)), confirm_window,
                             confirm_timeout_s, poll_s)
        self.backoff_s = backoff_s
        self.link = Link(url, heartbeat_s=heartbeat_s, blocked_timeout_s=max(self.settings.publish_timeout_s, 1.0),
                         backoff=ExponentialBackoff(*backoff_s), on_connect=self._declare, on_disconnect=self._forget)
        self.url, self.display_url = url, self.link.display_url
        self.params, self.address = self.link.params, self.link.address
        self._ids = MessageIds()
        self._publisher = Publisher(self.link, self.tuning, self.settings.stream, self._wait_or_timeout)
        self._topology = Topology(self.settings, self.link, self.tuning, self._publisher)
        self._letters = DeadLetters(self.settings, self.link, self.tuning, topology=self._topology,
                                    publisher=self._publisher, ids=self._ids)
        self._consumer = Consumer(self.settings, self.link, self.tuning, topology=self._topology,
                                  publisher=self._publisher, write_dead_letter=self._letters.write)
        with contextlib.suppress(BackendUnavailable):  # an outage now is reported by the first operation
            self.link.call(self.link.connection)

    # The options, as the parts share them; confirm_timeout_s may be changed on a live instance.
    @property
    def queue_type(self) -> QueueType:
        return self.tuning.queue_type

    @property
    def prefetch(self) -> int:
        return self.tuning.prefetch

    @property
    def confirm_window(self) -> int:
        return self.tuning.confirm_window

    @property
    def poll_s(self) -> float:
        return self.tuning.poll_s

    @property
    def confirm_timeout_s(self) -> float:
        return self.tuning.confirm_timeout_s

    @confirm_timeout_s.setter
    def confirm_timeout_s(self, value: float) -> None:
        self.tuning.confirm_timeout_s = value

    def _declare(self) -> None:
        """A new connection: declare the topology on it."""
        self._topology.declare_all()

    def _forget(self) -> None:
        """The connection is gone: so are the channels and declarations on it, and what was in flight."""
        self._topology.reset()
        self._publisher.reset()
        self._consumer.reset()

    # -- publishing -------------------------------------------------------------------------------------
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Publish every entry with confirms in flight, after waiting for room in every known group."""
        deadline = time.monotonic() + self.settings.publish_timeout_s
        self._await_capacity(len(entries), deadline)
        ids = [self._ids.new() for _ in entries]
        messages: list[Message] = [
            (self._topology.exchange, f"frames.{camera}", encoded.payload,
             persistent(entry_id, {HEADER: encoded.header}))
            for (camera, encoded), entry_id in zip(entries, ids, strict=True)
        ]
        self.link.call(lambda: self._publisher.publish_all(messages, deadline))
        self._count_published(len(entries))
        return ids

    def _measure_backlog(self) -> tuple[int, bool]:
        return self.link.call(self._slowest_backlog)

    def _pause(self, remaining: float) -> None:
        self.link.call(lambda: self.link.pump(self.tuning.poll_s))

    def _slowest_backlog(self) -> tuple[int, bool]:
        """The largest backlog over the groups this instance knows (``S:unrouted`` when none), and whether
        any message waits. Other consumers' unacked deliveries are counted at their prefetch."""
        self.link.connection()
        self.link.pump(0)
        topology, subs = self._topology, self._consumer.subs
        names = {topology.group_queue(g): subs.get(g) for g in topology.groups} or {topology.unrouted: None}
        worst, waiting = 0, False
        for name, sub in names.items():
            ready, consumers = topology.counts(name) or (0, 0)
            own = sub.unacked if sub is not None else 0
            others = max(0, consumers - (sub is not None)) * self.tuning.prefetch
            worst = max(worst, ready + own + others)
            waiting = waiting or ready > 0
        return worst, waiting

    # -- consuming --------------------------------------------------------------------------------------
    def ensure_group(self, group: str) -> None:
        """Declare the group's queue and bind it; a new queue takes over the frames held in ``S:unrouted``."""
        self._topology.ensure_group(group)

    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        self.ensure_group(group)
        self._consumer.take_over(group, consumer)
        deadline = time.monotonic() + block_ms / 1000
        return self.link.call(lambda: self._consumer.fetch(group, count, deadline))

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """``basic.ack`` the deliveries; one ``multiple`` ack when they are all this channel has handed out."""
        self._consumer.ack(deliveries)

    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Give a delivery back. Without a delay a quorum queue requeues it (counting the delivery); with one,
        or on a classic queue, it is republished (to a delay queue) carrying its attempts, then acked."""
        self._consumer.nack(delivery, delay_s)

    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """Publish the entry to ``S:dlq`` with why, confirmed, then ack it in the group."""
        self._consumer.dead_letter(group, entry, reason, error)

    # -- inspection -------------------------------------------------------------------------------------
    def stats(self, group: str) -> QueueStats:
        """Ready messages (passive declare) plus what this instance holds: AMQP does not tell one client
        what other consumers hold unacked, so ``pending`` counts this instance's deliveries only."""
        topology = self._topology

        def read() -> QueueStats:
            self.link.connection()
            dead = (topology.counts(topology.dlq) or (0, 0))[0]
            counts = topology.counts(topology.group_queue(group))
            if counts is None:
                depth = max([topology.counts(topology.unrouted) or (0, 0)] + [
                    topology.counts(topology.group_queue(g)) or (0, 0) for g in topology.groups])[0]
                return QueueStats(depth, depth, 0, 0, dead)
            sub = self._consumer.subs.get(group)
            if sub is None:
                return QueueStats(counts[0], counts[0], 0, 0, dead)
            # A round trip on the consumer's channel: deliveries the broker counted out before answering the
            # passive declare are in our buffer once this answer is back.
            sub.channel.basic_qos(prefetch_count=sub.prefetch)
            self.link.pump(0)
            now = time.monotonic()
            oldest = int((now - min(sub.handed.values(), default=now)) * 1000)
            lag = counts[0] + len(sub.buffer)
            return QueueStats(lag + len(sub.handed), lag, len(sub.handed), oldest, dead)

        return self.link.call(read)

    # -- dead letters -----------------------------------------------------------------------------------
    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """List the dead-letter queue in order (``basic.get`` without ack, given back before returning)."""
        return self._letters.listing(count, after)

    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """Publish each dead letter to its group's queue; only the group that gave up sees it again."""
        return self._letters.replay(ids)

    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """Ack the given dead letters out of their queue, or purge it whole with ``None``."""
        return self._letters.purge(ids)

    def close(self) -> None:
        """Close the connection: deliveries not acked go back to their queues for other consumers."""
        with self.link.lock:
            self.link.disconnect()

