"""Circuit breaker transitions, on a clock the test moves (time is the only thing faked here)."""

from __future__ import annotations

import logging

import pytest

from frame_buffer import metrics
from frame_buffer.backoff import ExponentialBackoff
from frame_buffer.flow.breaker import CircuitBreaker, CircuitOpen
from frame_buffer.queue import BackendUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def transitions(state: str) -> float:
    return metrics.REGISTRY.get_sample_value("frame_queue_breaker_transitions_total", {"state": state}) or 0.0


def make(clock: Clock, **kwargs: object) -> CircuitBreaker:
    return CircuitBreaker("test", clock=clock, cooldown=ExponentialBackoff(1.0, 8.0), **kwargs)  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_and_recovers_through_half_open(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    opened_before = transitions("open")
    breaker = make(clock, failure_threshold=3)
    caplog.set_level(logging.INFO, logger="frame_buffer.breaker")
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure(BackendUnavailable("redis at 127.0.0.1:1 unavailable"))
    assert breaker.state == "open" and not breaker.allow()
    assert metrics.REGISTRY.get_sample_value("frame_queue_breaker_state") == 2
    assert transitions("open") == opened_before + 1
    assert breaker.remaining_cooldown() == pytest.approx(1.0)
    clock.now += 1.0
    assert breaker.state == "half_open" and breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert metrics.REGISTRY.get_sample_value("frame_queue_breaker_state") == 0
    assert breaker.transitions == {"open": 1, "half_open": 1, "closed": 1}
    assert "closed -> open" in caplog.text and "127.0.0.1:1" in caplog.text
    assert "half_open -> closed" in caplog.text


def test_a_failed_probe_reopens_with_a_longer_cooldown() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)
    breaker.record_failure()
    assert breaker.remaining_cooldown() == pytest.approx(1.0)
    clock.now += 1.0
    breaker.record_failure()  # the probe
    assert breaker.state == "open"
    assert breaker.remaining_cooldown() == pytest.approx(2.0)
    clock.now += 2.0
    breaker.record_failure()
    assert breaker.remaining_cooldown() == pytest.approx(4.0)
    clock.now += 4.0
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.remaining_cooldown() == pytest.approx(1.0), "back to the first cool-down once closed"


def test_opens_on_failure_ratio_without_a_consecutive_run() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=100, failure_ratio=0.5, window=10, min_calls=10)
    for _ in range(4):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed", "8 calls: below min_calls"
    breaker.record_failure()
    assert breaker.state == "closed", "9 calls"
    breaker.record_failure()  # 10 calls, 6 failed
    assert breaker.state == "open"


def test_successes_keep_it_closed() -> None:
    breaker = make(Clock(), failure_threshold=2, window=10, min_calls=4, failure_ratio=0.7)
    for _ in range(50):
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed"


def test_call_counts_only_what_the_caller_calls_a_failure() -> None:
    clock = Clock()
    breaker = make(clock, failure_threshold=1)

    def fail(exc: Exception) -> None:
        raise exc

    def is_outage(exc: BaseException) -> bool:
        return isinstance(exc, BackendUnavailable)

    with pytest.raises(TimeoutError):
        breaker.call(lambda: fail(TimeoutError("read timed out")), is_outage)
    assert breaker.state == "closed"
    assert breaker.call(lambda: 42, is_outage) == 42
    with pytest.raises(BackendUnavailable):
        breaker.call(lambda: fail(BackendUnavailable("down")), is_outage)
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: 1, is_outage)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_ratio=0)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
