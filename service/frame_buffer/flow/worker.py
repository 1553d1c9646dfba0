"""One consumer: consume -> handler -> ack; a failing handler -> nack with backoff -> dead letter.

Why the retry delay goes through the queue (``nack(delay_s)``) instead of a sleep here: the frame
stays pending in the backend while it waits, so if this worker dies during the back-off another one
reclaims it, and the worker keeps serving other frames meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from frame_buffer import metrics
from frame_buffer.flow.breaker import CircuitBreaker
from frame_buffer.flow.connection import QueueConnection
from frame_buffer.flow.retry import RetryPolicy
from frame_buffer.frame import Frame
from frame_buffer.queue import BackendUnavailable, Delivery, FrameQueue

log = logging.getLogger("frame_buffer.worker")


def _no_beat() -> None:
    """The heartbeat of an unsupervised worker."""


class Worker:
    """One consumer of one group; run it in its own thread or process.

    Args:
        open_queue: makes this worker's own :class:`FrameQueue` (called again after a connection failure).
        group / consumer: the consumer group and this consumer's stable name within it.
        handler: called once per delivered frame; raising means "retry this frame later".
        retry: back-off and maximum attempts before a frame is dead-lettered (``handler_error``).
        batch: deliveries fetched per consume call.
        block_ms: how long one consume call waits for frames.
        breaker: around the backend calls; a default one that does not export the process-wide gauges.
    """

    def __init__(
        self,
        open_queue: Callable[[], FrameQueue],
        group: str,
        consumer: str,
        handler: Callable[[Frame], None],
        *,
        retry: RetryPolicy | None = None,
        batch: int = 16,
        block_ms: int = 500,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._connection = QueueConnection(open_queue)
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.retry = retry or RetryPolicy()
        self.batch = batch
        self.block_ms = block_ms
        self.breaker = breaker or CircuitBreaker(f"worker {consumer}", export_metrics=False)
        self.consumed = 0
        self.acked = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.handler_errors = 0
        self._beat: Callable[[], None] = _no_beat

    def summary(self) -> dict[str, int]:
        """What this worker did so far (handler-level dead letters only: undecodable entries are
        dead-lettered inside ``consume`` and show in the queue's dead-letter count)."""
        return {
            "consumed": self.consumed, "acked": self.acked, "redelivered": self.redelivered,
            "dead_lettered": self.dead_lettered, "handler_errors": self.handler_errors,
        }

    def run(self, stop: threading.Event, beat: Callable[[], None] | None = None) -> None:
        """Consume until ``stop`` is set; the batch in hand when it is set is finished and acked.

        ``beat`` is called on every round and after every frame handled: a supervisor that sees no beat for
        long knows the handler (or a backend call) hangs. An exception that is not an ``Exception`` (a
        handler's ``SystemExit``, say) ends this call with the batch in hand unacked: it stays pending for
        this consumer name, which takes it back when run again.
        """
        self._beat = beat or _no_beat
        try:
            while not stop.is_set():
                self._beat()
                if not self.breaker.allow():
                    stop.wait(max(self.breaker.remaining_cooldown(), 0.001))
                    continue
                try:
                    queue = self._connection.get()
                    deliveries = queue.consume(self.group, self.consumer, count=self.batch, block_ms=self.block_ms)
                    self._handle(queue, deliveries)
                except BackendUnavailable as exc:
                    # Unacked deliveries stay pending; this consumer name takes them back on reconnect.
                    log.warning("worker %s: backend unavailable: %s", self.consumer, exc)
                    self.breaker.record_failure(exc)
                    self._connection.drop()
                    continue
                self.breaker.record_success()
        finally:
            self._connection.drop()

    def _handle(self, queue: FrameQueue, deliveries: list[Delivery]) -> None:
        done: list[Delivery] = []
        handler_stage = metrics.STAGE["handler"]
        for delivery in deliveries:
            labels = {"camera": delivery.frame.camera, "group": self.group}
            self.consumed += 1
            metrics.consumed.labels(**labels).inc()
            if delivery.attempts > 1:
                self.redelivered += 1
                metrics.redelivered.labels(**labels).inc()
            else:
                metrics.end_to_end_latency.observe(max(0.0, (time.time_ns() - delivery.frame.ts_ns) / 1e9))
            started = time.perf_counter_ns()
            try:
                self.handler(delivery.frame)
            except Exception as exc:  # any handler failure is retried, then dead-lettered
                self.handler_errors += 1
                self._failed(queue, delivery, exc)
                continue
            finally:
                handler_stage.observe((time.perf_counter_ns() - started) / 1e9)
                self._beat()
            done.append(delivery)
        if done:
            started = time.perf_counter_ns()
            queue.ack(done)
            metrics.observe_stage("ack", time.perf_counter_ns() - started, len(done))
            self.acked += len(done)
            for delivery in done:
                metrics.acked.labels(camera=delivery.frame.camera, group=self.group).inc()

    def _failed(self, queue: FrameQueue, delivery: Delivery, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if self.retry.exhausted(delivery.attempts):
            log.error("worker %s: frame %s dead-lettered after %d attempts: %s",
                      self.consumer, delivery.id, delivery.attempts, error)
            queue.dead_letter(delivery, "handler_error", error)
            self.dead_lettered += 1
            metrics.dead_lettered.labels(reason="handler_error").inc()
            return
        delay = self.retry.delay(delivery.attempts)
        log.info("worker %s: frame %s failed (attempt %d), retry in %.3fs: %s",
                 self.consumer, delivery.id, delivery.attempts, delay, error)
        queue.nack(delivery, delay)
