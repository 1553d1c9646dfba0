"""The one interface every backend implements, and the delivery logic they share.

Semantics, identical on every backend (the conformance suite in ``tests/queue`` holds them to it):

* at-least-once: a frame leaves the queue for a group only when a consumer of that group acks it;
  a consumer that dies leaves its frames pending, and another consumer of the group reclaims them
  after ``claim_min_idle_ms``;
* frames of one camera are delivered in publish order (redeliveries excepted);
* every consumer group sees every frame; consumers within a group share them;
* an entry that cannot be decoded, or that was delivered more than ``max_deliveries`` times, goes to the
  dead-letter queue with the reason, and the consumer keeps going;
* ``publish`` never drops: when a group lags more than ``max_lag`` entries, or the server is out of
  memory, it waits, and raises :class:`BackpressureTimeout` after ``publish_timeout_s``.

A ``FrameQueue`` instance is used by one thread at a time; give each worker its own.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from frame_buffer import metrics
from frame_buffer.codec import CodecError, EncodedFrame, FrameCodec
from frame_buffer.errors import EXIT_CONFIG, EXIT_UNREACHABLE, FrameBufferError
from frame_buffer.frame import Frame
from frame_buffer.queue.settings import QueueSettings as QueueSettings  # noqa: PLC0414 - moved there, re-exported

log = logging.getLogger("frame_buffer.queue")


class QueueError(FrameBufferError):
    """Base class of the errors a backend raises.

    ``written`` lists the positions in a publish's batch of entries that were stored all the same (a batch over
    several shard streams is one transaction per shard, so one shard can fail after another stored its part).
    The caller must not publish those again.
    """

    written: tuple[int, ...] = ()


class BackendUnavailable(QueueError):
    """The server cannot be reached or answered with a connection-level failure; names its address."""

    exit_code = EXIT_UNREACHABLE


class BackendRefused(BackendUnavailable):
    """The server answered but refused us: wrong credentials, or a user without the permission a command needs.

    A configuration error, not an outage: a command that meets it at start exits 2. It stays a
    :class:`BackendUnavailable` so that a running producer or worker that meets it (credentials revoked while
    running) keeps its frames, spooled or pending, exactly as during an outage.
    """

    exit_code = EXIT_CONFIG


class BackpressureTimeout(QueueError):
    """``publish`` waited ``publish_timeout_s`` for consumers (or server memory) and gave up.

    ``written`` lists the positions in the batch of entries that were stored all the same (RabbitMQ confirms
    each message on its own; one Redis stream and memory write a batch atomically, so for them it is empty).
    The caller still owns the other frames and decides what to do (spool, retry, drop); it must not publish
    the written ones again.
    """

    def __init__(self, message: str, written: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.written = written


class StreamWrongType(QueueError):
    """The stream's key (or its dead-letter key) holds another type of value (Redis WRONGTYPE): a name clash."""

    exit_code = EXIT_CONFIG


@dataclass(frozen=True, slots=True)
class RawEntry:
    """An entry as a backend fetched it, before decoding.

    ``token`` is the backend's own handle (a Redis entry id, an AMQP delivery tag).
    """

    id: str
    header: bytes | None
    payload: bytes | memoryview | None
    attempts: int
    token: Any = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """A frame handed to a consumer; ack or nack it.

    Args:
        id: the entry id in the queue (Redis stream id, AMQP message id).
        frame: the decoded frame.
        attempts: how many times this entry has been delivered, 1 on the first delivery.
        group: the consumer group it was delivered to.
        consumer: the consumer it was delivered to.
        raw: the entry as it was fetched (needed to dead-letter it unchanged).
    """

    id: str
    frame: Frame
    attempts: int
    group: str
    consumer: str
    raw: RawEntry = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An entry in the dead-letter queue, with what is known about why it is there."""

    id: str
    original_id: str
    group: str
    reason: str
    error: str
    attempts: int
    dead_lettered_at_ms: int
    header: bytes | None = field(repr=False)
    payload: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A snapshot of one group's view of the queue.

    ``depth``: entries held by the queue (stream length). ``lag``: entries not yet delivered to the group.
    ``pending``: delivered, not yet acked. ``oldest_pending_ms``: idle time of the oldest pending entry
    (0 when none). ``dead_letters``: entries in the dead-letter queue.
    """

    depth: int
    lag: int
    pending: int
    oldest_pending_ms: int
    dead_letters: int

    @property
    def backlog(self) -> int:
        """Entries the group still has to acknowledge: what backpressure bounds."""
        return self.lag + self.pending


class FrameQueue(ABC):
    """A queue of frames with consumer groups; see the module docstring for the guarantees."""

    #: Backend name as used in configuration (``redis``, ``rabbitmq``, ``memory``).
    backend: str = ""

    def __init__(self, settings: QueueSettings | None = None, codec: FrameCodec | None = None) -> None:
        self.settings = settings or QueueSettings()
        self.codec = codec or FrameCodec()
        # Backlog of the slowest group as last measured, plus what this instance published since: an upper bound
        # that lets publish skip the measurement (a round trip) while far from the limit.
        self._backlog_estimate = 0

    # -- publishing -------------------------------------------------------------------------------------
    def publish(self, frame: Frame) -> str:
        """Publish one frame and return its id; blocks under backpressure (see the module docstring)."""
        return self.publish_many([frame])[0]

    def publish_many(self, frames: Sequence[Frame]) -> list[str]:
        """Publish frames in order, in one round trip where the backend allows; returns their ids.

        Raises :class:`~frame_buffer.codec.CodecError` before anything is sent when a frame cannot be
        encoded, :class:`BackpressureTimeout`, or :class:`BackendUnavailable`.
        """
        if not frames:
            return []
        encoded = [(frame.camera, self.codec.encode(frame)) for frame in frames]
        return self.publish_encoded(encoded)

    @abstractmethod
    def publish_encoded(self, entries: Sequence[tuple[str, EncodedFrame]]) -> list[str]:
        """Publish already-encoded ``(camera, frame)`` pairs; the backend half of :meth:`publish_many`."""

    # -- backpressure: the one wait of every backend, on the hooks below it ------------------------------
    def _await_capacity(self, incoming: int, deadline: float) -> None:
        """Return once the slowest group has room for ``incoming`` more entries within ``max_lag``, or once
        waiting cannot make room (nothing waits to be consumed); :class:`BackpressureTimeout` at ``deadline``."""
        limit = self.settings.max_lag
        if self._backlog_bound() + incoming <= limit:
            return
        while True:
            backlog, waiting = self._measure_backlog()
            self._backlog_estimate = backlog
            if backlog + incoming <= limit or not waiting:
                return
            self.trim()  # free what every group has acknowledged, then wait for the rest
            self._wait_or_timeout(deadline, f"a consumer group of {self.settings.stream!r} lags {backlog} entries")

    def _count_published(self, count: int) -> None:
        """Add ``count`` published entries to the backlog estimate (they may all still be unconsumed)."""
        self._backlog_estimate += count

    def _wait_or_timeout(self, deadline: float, why: str, written: tuple[int, ...] = ()) -> None:
        """Wait a little for consumers (:meth:`_pause`), or raise :class:`BackpressureTimeout` saying ``why`` once
        ``deadline`` has passed; ``written`` are the positions of a batch stored all the same."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackpressureTimeout(f"publish waited {self.settings.publish_timeout_s}s: {why}", written)
        self._pause(remaining)

    def _backlog_bound(self) -> int:
        """An upper bound of the slowest group's backlog known without asking the server: the estimate."""
        return self._backlog_estimate

    @abstractmethod
    def _measure_backlog(self) -> tuple[int, bool]:
        """The slowest group's backlog (lag + pending) as the server counts it now, and whether anything waits
        to be consumed (when nothing does, waiting cannot make room, and publish goes ahead)."""

    @abstractmethod
    def _pause(self, remaining: float) -> None:
        """Wait for consumers to make room: up to ``remaining`` seconds, or less (the caller measures again)."""

    # -- consuming --------------------------------------------------------------------------------------
    def consume(self, group: str, consumer: str, count: int = 16, block_ms: int = 1000) -> list[Delivery]:
        """Return up to ``count`` deliveries for ``consumer`` of ``group``, waiting up to ``block_ms``.

        Reclaimed entries of dead consumers come first. Entries that cannot be decoded or that exceeded
        ``max_deliveries`` are dead-lettered here and not returned. An empty list means nothing arrived.
        """
        deadline = time.monotonic() + block_ms / 1000
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
            raw = self._fetch(group, consumer, count, remaining_ms)
            deliveries = self._decode_or_dead_letter(group, consumer, raw, time.time_ns())
            # Everything fetched may have been dead-lettered: keep waiting for real frames.
            if deliveries or not raw or remaining_ms == 0:
                return deliveries

    def _decode_or_dead_letter(
        self, group: str, consumer: str, raw: list[RawEntry], received_ns: int
    ) -> list[Delivery]:
        """Decode what was fetched (at wall-clock ``received_ns``), timing the ``decode`` and, for first
        deliveries, the ``capture_to_receive`` stages; dead-letter what cannot be delivered."""
        deliveries = []
        decode_stage, receive_stage = metrics.STAGE["decode"], metrics.STAGE["capture_to_receive"]
        for entry in raw:
            if entry.attempts > self.settings.max_deliveries:
                self._dead_letter(
                    group, entry, "delivery_limit",
                    f"delivered {entry.attempts} times, limit {self.settings.max_deliveries}",
                )
                metrics.dead_lettered.labels(reason="delivery_limit").inc()
                continue
            started = time.perf_counter_ns()
            try:
                frame = self.codec.decode(entry.header, entry.payload)
            except CodecError as exc:
                self._dead_letter(group, entry, exc.reason, str(exc))
                metrics.dead_lettered.labels(reason=exc.reason).inc()
                continue
            except Exception as exc:
                # Decoding is total (codec.py), so this is a bug in it. Defence in depth: one entry that
                # trips it must not stop the consumer or come back forever; it is kept, with the error.
                log.exception("entry %s: decoding failed unexpectedly; dead-lettered as decode_error", entry.id)
                self._dead_letter(group, entry, "decode_error", f"{type(exc).__name__}: {exc}")
                metrics.dead_lettered.labels(reason="decode_error").inc()
                continue
            decode_stage.observe((time.perf_counter_ns() - started) / 1e9)
            if entry.attempts == 1:  # a redelivery's capture time says nothing about the path
                receive_stage.observe(max(received_ns - frame.ts_ns, 0) / 1e9)
            deliveries.append(Delivery(entry.id, frame, entry.attempts, group, consumer, entry))
        return deliveries

    @abstractmethod
    def _fetch(self, group: str, consumer: str, count: int, block_ms: int) -> list[RawEntry]:
        """Fetch up to ``count`` raw entries: reclaimed ones first, then new ones, waiting ``block_ms``."""

    @abstractmethod
    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge deliveries: they are done and leave the group's pending list."""

    @abstractmethod
    def nack(self, delivery: Delivery, delay_s: float = 0.0) -> None:
        """Give a delivery back: it is delivered again (to any consumer of the group) after ``delay_s``."""

    def dead_letter(self, delivery: Delivery, reason: str, error: str = "") -> None:
        """Move a delivery to the dead-letter queue with ``reason`` and ack it, atomically where possible."""
        self._dead_letter(delivery.group, delivery.raw, reason, error)

    @abstractmethod
    def _dead_letter(self, group: str, entry: RawEntry, reason: str, error: str) -> None:
        """Write ``entry`` unchanged to the dead-letter queue with its reason, then ack it in ``group``."""

    # -- groups and inspection --------------------------------------------------------------------------
    @abstractmethod
    def ensure_group(self, group: str) -> None:
        """Create ``group`` if it does not exist; it starts at the oldest entry still held."""

    def trim(self) -> None:
        """Free entries every group has acknowledged; backends that free on ack need not override."""
        return None

    @abstractmethod
    def stats(self, group: str) -> QueueStats:
        """Depth, lag, pending and dead letters as ``group`` sees them."""

    def shard_stats(self, group: str) -> list[QueueStats]:
        """:meth:`stats` of each shard stream, in shard order; one for a backend without shards."""
        return [self.stats(group)]

    # -- dead letters -----------------------------------------------------------------------------------
    @property
    def dead_letter_name(self) -> str:
        """Where the dead letters are, for messages: the dead-letter queue's name, or its shards' pattern."""
        return self.settings.dead_letter_stream

    @abstractmethod
    def dead_letters(self, count: int = 100, after: str | None = None) -> list[DeadLetter]:
        """List up to ``count`` dead letters, oldest first, starting after id ``after``."""

    @abstractmethod
    def replay_dead_letters(self, ids: Iterable[str]) -> int:
        """Publish the given dead letters back to the main queue and remove them; returns how many."""

    @abstractmethod
    def purge_dead_letters(self, ids: Iterable[str] | None = None) -> int:
        """Delete the given dead letters, or all of them with ``None``; returns how many."""

    # -- lifecycle --------------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release connections. Unacked deliveries stay pending and are reclaimed by others."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
