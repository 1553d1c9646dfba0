"""The source-facing side of the service: submit frames, and a publisher thread gets them to the queue.

::

    submit(frame) --encode--> AdaptiveBuffer --publisher thread--> breaker --> FrameQueue.publish_encoded
                                   |                                  | open / BackendUnavailable
                                   +-------------> Spool <------------+   (replayed first when closed)

Why a thread: the source (a camera) must not wait for a network round trip per frame, and the
publisher batches what piled up meanwhile into one round trip. Ordering: frames being published are
older than the spool's, which are older than the buffer's, and the publisher always takes the oldest
first, so every camera's frames reach the queue in order (a batch retried after a lost reply can be
published twice: delivery is at-least-once).

Loss, precisely: a frame for which ``submit`` returned True reaches the queue (and so a consumer at
least once) unless a drop policy the operator chose discarded it later (``drop_oldest``,
``spool_full``), or ``close`` gave up on it after its timeout (``shutdown_timeout``); every such drop is
counted by reason in ``frame_queue_dropped`` and in :meth:`Producer.summary`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from frame_buffer import metrics
from frame_buffer.codec import FrameCodec
from frame_buffer.flow.backpressure import Admission
from frame_buffer.flow.breaker import CircuitBreaker
from frame_buffer.flow.buffer import AdaptiveBuffer, Item, MemoryBudget
from frame_buffer.flow.connection import QueueConnection
from frame_buffer.flow.spool import Spool
from frame_buffer.frame import Frame
from frame_buffer.queue import BackendUnavailable, BackpressureTimeout, FrameQueue, QueueError

log = logging.getLogger("frame_buffer.producer")

#: Longest the publisher sleeps without looking at its state again (close, cool-down ends).
_IDLE_WAIT_S = 0.1


class Beats(Protocol):
    """A heartbeat (``supervisor.Heartbeat``): the publisher beats it on every round."""

    def beat(self) -> None: ...


#: Starts a supervised loop: ``spawn(name, loop, stop)``, as ``supervisor.Supervisor.spawn`` does.
Spawn = Callable[[str, Callable[[Beats], object], threading.Event], threading.Thread]


class _NoBeat:
    def beat(self) -> None:
        """Nobody watches an unsupervised publisher's progress."""


class Producer:
    """Source-facing side: frames go into the adaptive buffer; a publisher thread drains it through the
    breaker into the queue, or into the spool while the breaker is open; the spool replays in order
    before new frames.

    Args:
        open_queue: makes the publisher's own :class:`FrameQueue` (called again after a connection
            failure, so a broken connection is not reused); may raise while the backend is down.
        policy: ``block`` (default), ``drop_oldest`` or ``drop_newest``; see ``flow.backpressure``.
        budget_bytes: memory the buffer, the frames being published and the spool hold together, at most.
        min_capacity / max_capacity: bounds of the adaptive buffer, in frames.
        block_timeout_s: how long ``submit`` waits under ``block`` before raising BackpressureTimeout.
        batch: frames per publish round trip, at most.
        breaker: the circuit breaker around the backend; a default one exports the breaker metrics.
        codec: encodes frames at submit (so a frame that cannot be encoded is refused to the caller, and
            the budget counts the bytes actually held); use the queue's codec settings.
        spawn: starts the publisher thread under a supervisor (restarted if it dies, its progress watched);
            by default a plain thread.
    """

    def __init__(
        self,
        open_queue: Callable[[], FrameQueue],
        *,
        policy: str = "block",
        budget_bytes: int = 256 * 2**20,
        min_capacity: int = 100,
        max_capacity: int = 10_000,
        block_timeout_s: float = 30.0,
        batch: int = 32,
        breaker: CircuitBreaker | None = None,
        codec: FrameCodec | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch: must be at least 1, got {batch}")
        self._connection = QueueConnection(open_queue)
        self.block_timeout_s = block_timeout_s
        self.batch = batch
        self.breaker = breaker or CircuitBreaker("publish")
        self.codec = codec or FrameCodec()
        self.budget = MemoryBudget(budget_bytes)
        self.buffer = AdaptiveBuffer(self.budget, min_capacity, max_capacity)
        self.spool = Spool(self.budget)
        self._cond = threading.Condition()
        self._closing = False
        self._stop = False
        self.admission = Admission(policy, self.buffer, self.spool, self._cond, lambda: self._closing,
                                   spill=self._spill_if_open)
        self._inflight: list[tuple[Item, int]] = []
        self._inflight_from_spool = False
        self._taken_ns = 0  # perf_counter_ns when the in-flight batch was taken (publisher thread only)
        self.submitted = 0
        self.published = 0
        self.replayed = 0  # published from the spool
        self.publish_failures = 0
        self.backpressure_waits = 0  # publish calls the backend answered with BackpressureTimeout
        self._update_gauges()
        self._stopped = threading.Event()  # set with _stop: a supervisor restarts the publisher until then
        if spawn is None:
            self._thread = threading.Thread(target=self._run_alone, name="frame-publisher", daemon=True)
            self._thread.start()
        else:
            self._thread = spawn("publisher", self._run, self._stopped)

    # -- source side ------------------------------------------------------------------------------------
    def submit(self, frame: Frame) -> bool:
        """Hand a frame over; False when a drop policy discarded it (counted by reason).

        Under ``block`` waits up to ``block_timeout_s`` for room and then raises
        :class:`~frame_buffer.queue.BackpressureTimeout` (the frame was not taken). Raises
        :class:`~frame_buffer.codec.CodecError` for a frame that cannot be encoded and
        :class:`~frame_buffer.flow.buffer.FrameOverBudget` for one larger than the whole budget.
        """
        item: Item = (frame.camera, self.codec.encode(frame))
        with self._cond:
            accepted = self.admission.admit(item, self.block_timeout_s)
            if accepted:
                self.submitted += 1
            self._update_gauges()
            return accepted

    def flush(self, timeout_s: float) -> bool:
        """Wait until buffer, spool and in-flight batch are empty and all published; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._held():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(remaining, _IDLE_WAIT_S))
            return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush for up to ``timeout_s``, then stop the publisher; frames still held count as dropped.

        A publish still waiting on the backend after the timeout is abandoned with the thread (a daemon);
        its batch is counted as ``shutdown_timeout`` although the backend may still take it.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.flush(timeout_s)
        with self._cond:
            self._stop = True
            self._stopped.set()
            self._cond.notify_all()
        self._thread.join(max(timeout_s, 1.0))
        with self._cond:
            left = len(self.buffer) + len(self.spool) + len(self._inflight)
            if left:
                log.error("producer closed with %d frames not published (shutdown_timeout)", left)
                self.admission.drop("shutdown_timeout", left)
                self.buffer.take(len(self.buffer))
                self.spool.take(len(self.spool))
                self._inflight = []
                self.budget.release(self.budget.used)
            self._update_gauges()
        if self._connection.is_open and not self._thread.is_alive():
            self._connection.drop()

    @property
    def degraded(self) -> bool:
        """True while the breaker is not closed or frames wait in the spool."""
        return self.breaker.state != "closed" or len(self.spool) > 0

    def summary(self) -> dict[str, Any]:
        """Counts for reports and the loadgen ``--json`` output."""
        with self._cond:
            return {
                "submitted": self.submitted,
                "published": self.published,
                "dropped": dict(self.admission.dropped),
                "spooled": self.spool.total_spooled,
                "replayed": self.replayed,
                "publish_failures": self.publish_failures,
                "backpressure_waits": self.backpressure_waits,
                "buffer_frames": len(self.buffer),
                "buffer_capacity": self.buffer.capacity,
                "spool_frames": len(self.spool),
                "budget_bytes": self.budget.total,
                "peak_bytes": self.budget.peak,
                "breaker_state": self.breaker.state,
                "breaker_transitions": dict(self.breaker.transitions),
                "degraded": self.degraded,
            }

    # -- publisher thread -------------------------------------------------------------------------------
    def _held(self) -> int:
        return len(self.buffer) + len(self.spool) + len(self._inflight)

    def _update_gauges(self) -> None:
        metrics.buffer_frames.set(len(self.buffer))
        metrics.buffer_bytes.set(self.budget.used - self.spool.bytes)

    def _run(self, heartbeat: Beats) -> None:
        self._probe()
        while self._step():
            heartbeat.beat()

    def _run_alone(self) -> None:
        try:
            self._run(_NoBeat())
        except Exception:  # pragma: no cover - a bug; flush() and close() notice the dead thread
            log.exception("publisher thread crashed")
            raise

    def _probe(self) -> None:
        """Open the queue at start, so an unreachable backend shows as degraded before the first frame."""
        try:
            self._connection.get()
        except Exception as exc:  # whatever opening fails with, the spool takes over
            self._failed(exc)

    def _step(self) -> bool:
        """One round: take the oldest frames, publish or spool them; False when it is time to stop."""
        with self._cond:
            if not self._held():
                if self._stop:
                    return False
                self._cond.wait(_IDLE_WAIT_S)
                return True  # a round without work: the caller beats the heartbeat
            if self._stop:  # close() gave up flushing: frames left are counted by close()
                return False
            if not self.breaker.allow():
                self._spool_everything()
                self._cond.wait(min(max(self.breaker.remaining_cooldown(), 0.001), _IDLE_WAIT_S))
                return True
            if not self._inflight:
                self._inflight_from_spool = len(self.spool) > 0
                if self._inflight_from_spool:
                    self._inflight = self.spool.take(self.batch)
                else:
                    self._inflight = self.buffer.take(self.batch, publishing=True)  # ends their buffer stage
                self._taken_ns = time.perf_counter_ns()  # their publish stage starts
                self._update_gauges()
            batch = self._inflight
            from_spool = self._inflight_from_spool
        started = time.monotonic()
        try:
            queue = self._connection.get()
            queue.publish_encoded([item for item, _ in batch])
        except BackpressureTimeout as exc:
            # The backend is up and says "wait": not a breaker failure. Keep what was not written and try again.
            self.backpressure_waits += 1
            self.breaker.record_success()
            if exc.written:
                written = set(exc.written)
                self._published_batch([entry for i, entry in enumerate(batch) if i in written], from_spool, None)
                with self._cond:
                    self._inflight = [entry for i, entry in enumerate(batch) if i not in written]
            return True
        except Exception as exc:  # BackendUnavailable, or anything a broken client raises
            self._failed(exc)
            if isinstance(exc, QueueError) and exc.written:  # shards that stored their part before one failed
                written = set(exc.written)
                self._published_batch([entry for i, entry in enumerate(batch) if i in written], from_spool, None)
                with self._cond:
                    self._inflight = [entry for i, entry in enumerate(batch) if i not in written]
            with self._cond:
                self.spool.push_front(self._inflight, returning=self._inflight_from_spool)
                self._inflight = []
                self._update_gauges()
            return True
        self.breaker.record_success()
        self._published_batch(batch, from_spool, time.monotonic() - started)
        with self._cond:
            self._inflight = []
        return True

    def _published_batch(self, batch: list[tuple[Item, int]], from_spool: bool, elapsed: float | None) -> None:
        """Account for frames the backend stored: counters, metrics, and their bytes back to the budget."""
        if elapsed is not None:
            metrics.publish_duration.observe(elapsed)
        metrics.observe_stage("publish", time.perf_counter_ns() - self._taken_ns, len(batch))
        for camera, _ in (item for item, _ in batch):
            metrics.published.labels(camera=camera).inc()
        with self._cond:
            if elapsed is not None:
                self.buffer.record_drain(len(batch), elapsed)
            self.budget.release(sum(cost for _, cost in batch))
            self.published += len(batch)
            if from_spool:
                self.replayed += len(batch)
            self._update_gauges()
            self._cond.notify_all()

    def _spill_if_open(self) -> bool:
        """Buffer full while the breaker is open: move it to the spool now (the caller holds the lock).

        Without this, a fast source would hit the buffer's frame capacity between two wake-ups of the
        publisher and drop (or block) although the budget still has room in the spool.
        """
        if self.breaker.state != "open" or not len(self.buffer):
            return False
        self.spool.push_back(self.buffer.take(len(self.buffer)))
        self._update_gauges()
        return True

    def _spool_everything(self) -> None:
        """Breaker open: in-flight frames (oldest) to the spool head, then the whole buffer behind them."""
        if self._inflight:
            self.spool.push_front(self._inflight, returning=self._inflight_from_spool)
            self._inflight = []
        if len(self.buffer):
            self.spool.push_back(self.buffer.take(len(self.buffer)))
        self._update_gauges()
        self._cond.notify_all()

    def _failed(self, exc: BaseException) -> None:
        self.publish_failures += 1
        metrics.publish_errors.inc()
        if not isinstance(exc, BackendUnavailable):
            log.error("publish failed with an unexpected error, treated as an outage: %r", exc)
        self.breaker.record_failure(exc)
        self._connection.drop()
