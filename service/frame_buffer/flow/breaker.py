"""Circuit breaker around backend calls: closed, open, half-open.

Why: when the backend is down, every publish would otherwise wait for a connection timeout, and every
frame would pay for it. An open breaker answers at once, so the producer spools instead, and only a
few probe calls test the backend until it is back.

* closed -> open: after ``failure_threshold`` consecutive failures, or when at least ``min_calls`` of the
  last ``window`` calls were made and ``failure_ratio`` of them failed;
* open -> half-open: after a cool-down given by a :class:`~frame_buffer.flow.retry.Backoff` of the number of
  consecutive openings (longer each time the backend fails its probe again);
* half-open -> closed: after ``half_open_successes`` successful probes; -> open: on a failed probe.

Only :class:`~frame_buffer.queue.BackendUnavailable` should be recorded as a failure: backpressure
(:class:`~frame_buffer.queue.BackpressureTimeout`) and a blocking read that returned nothing are the
backend working as intended. State and transitions go to the metrics and to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, TypeVar

from frame_buffer import metrics
from frame_buffer.errors import FrameBufferError
from frame_buffer.flow.retry import Backoff, ExponentialBackoff

log = logging.getLogger("frame_buffer.breaker")
T = TypeVar("T")

State = Literal["closed", "open", "half_open"]


class CircuitOpen(FrameBufferError):
    """The breaker is open: the call was not attempted."""


class CircuitBreaker:
    """Tracks the health of one backend connection; thread-safe.

    Args:
        name: shows in log lines (``publish``, ``worker w1``).
        failure_threshold: consecutive failures that open the breaker.
        failure_ratio: share of failed calls in the window that opens it.
        window: how many recent calls the ratio is computed over.
        min_calls: the ratio only counts once this many calls are in the window.
        cooldown: seconds to stay open, from the number of consecutive openings (1 for the first).
        half_open_successes: successful probes that close it again.
        export_metrics: write ``frame_queue_breaker_state`` and ``frame_queue_breaker_transitions``; the
            gauge has no labels, so exactly one breaker per process (the producer's) exports.
            ``frame_queue_ready`` is left to the service, which also knows whether the backend answers.
        clock: monotonic time source, replaceable in tests.
    """

    def __init__(
        self,
        name: str = "backend",
        *,
        failure_threshold: int = 3,
        failure_ratio: float = 0.5,
        window: int = 20,
        min_calls: int = 10,
        cooldown: Backoff | None = None,
        half_open_successes: int = 1,
        export_metrics: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or window < 1 or min_calls < 1 or half_open_successes < 1:
            raise ValueError("failure_threshold, window, min_calls and half_open_successes must be >= 1")
        if not 0 < failure_ratio <= 1:
            raise ValueError(f"failure_ratio: must be in (0, 1], got {failure_ratio}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.failure_ratio = failure_ratio
        self.min_calls = min_calls
        self.cooldown = cooldown or ExponentialBackoff(base_s=0.25, cap_s=5.0)
        self.half_open_successes = half_open_successes
        self.export_metrics = export_metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=window)
        self._openings = 0
        self._open_until = 0.0
        self._probe_successes = 0
        self.transitions: dict[str, int] = {"closed": 0, "open": 0, "half_open": 0}
        if export_metrics:
            metrics.breaker_state.set(metrics.BREAKER_STATES["closed"])

    # -- state ------------------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The current state; an open breaker whose cool-down has passed reports ``half_open``."""
        with self._lock:
            self._maybe_half_open()
            return self._state

    def allow(self) -> bool:
        """True when a call may be attempted now (closed, or half-open probing)."""
        return self.state != "open"

    def remaining_cooldown(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when not open."""
        with self._lock:
            self._maybe_half_open()
            return max(0.0, self._open_until - self._clock()) if self._state == "open" else 0.0

    def _maybe_half_open(self) -> None:
        if self._state == "open" and self._clock() >= self._open_until:
            self._transition("half_open")
            self._probe_successes = 0

    # -- outcomes ---------------------------------------------------------------------------------------
    def record_success(self) -> None:
        """A backend call succeeded (including a publish that only waited under backpressure)."""
        with self._lock:
            self._maybe_half_open()
            self._consecutive = 0
            self._recent.append(True)
            if self._state == "half_open":
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_successes:
                    self._openings = 0
                    self._recent.clear()
                    self._transition("closed")

    def record_failure(self, error: BaseException | None = None) -> None:
        """A backend call failed with a connection-level error."""
        with self._lock:
            self._maybe_half_open()
            self._consecutive += 1
            self._recent.append(False)
            if self._state == "half_open" or (self._state == "closed" and self._should_open()):
                self._open(error)

    def _should_open(self) -> bool:
        if self._consecutive >= self.failure_threshold:
            return True
        if len(self._recent) < self.min_calls:
            return False
        failures = sum(1 for ok in self._recent if not ok)
        return failures / len(self._recent) >= self.failure_ratio

    def _open(self, error: BaseException | None) -> None:
        self._openings += 1
        delay = self.cooldown.compute(self._openings)
        self._open_until = self._clock() + delay
        self._transition("open", f"for {delay:.2f}s after {self._consecutive} consecutive failures"
                                 + (f": {error}" if error else ""))

    def _transition(self, state: State, detail: str = "") -> None:
        previous, self._state = self._state, state
        self.transitions[state] += 1
        level = logging.WARNING if state == "open" else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s%s", self.name, previous, state,
                f" ({detail})" if detail else "")
        if self.export_metrics:
            metrics.breaker_state.set(metrics.BREAKER_STATES[state])
            metrics.breaker_transitions.labels(state=state).inc()

    def call(self, fn: Callable[[], T], is_failure: Callable[[BaseException], bool]) -> T:
        """Run ``fn`` through the breaker: :class:`CircuitOpen` when open, outcome recorded otherwise."""
        if not self.allow():
            raise CircuitOpen(f"circuit breaker {self.name} is open")
        try:
            result = fn()
        except BaseException as exc:
            if is_failure(exc):
                self.record_failure(exc)
            raise
        self.record_success()
        return result
