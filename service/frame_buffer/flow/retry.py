"""Backoff strategies and the retry policy of consumers, in the spirit of redis-py's ``backoff.py``.

A strategy is a small object with one method, ``compute(failures)``: how long to wait after the
``failures``-th consecutive failure (1 for the first). Strategies are swappable wherever a delay is
needed: handler retries (:class:`RetryPolicy`) and the circuit breaker's cool-down.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class Backoff(ABC):
    """How long to wait after a number of consecutive failures."""

    @abstractmethod
    def compute(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (``failures`` >= 1)."""


class NoBackoff(Backoff):
    """Retry at once: for tests and for calls that are cheap to repeat."""

    def compute(self, failures: int) -> float:
        return 0.0


class ConstantBackoff(Backoff):
    """The same delay every time."""

    def __init__(self, delay_s: float) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s: must not be negative, got {delay_s}")
        self.delay_s = delay_s

    def compute(self, failures: int) -> float:
        return self.delay_s


class ExponentialBackoff(Backoff):
    """``base * 2**(failures-1)``, capped: deterministic, so easy to reason about in tests."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0) -> None:
        if base_s < 0 or cap_s < 0:
            raise ValueError(f"base_s and cap_s must not be negative, got {base_s}, {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s

    def compute(self, failures: int) -> float:
        # Clamp the exponent: 2**1100 overflows a float long after the cap has been reached.
        exponent = min(max(failures, 1) - 1, 64)
        return float(min(self.cap_s, self.base_s * 2**exponent))


class ExponentialFullJitter(ExponentialBackoff):
    """A uniform draw in ``[0, min(cap, base * 2**(failures-1))]`` ("full jitter").

    Jitter spreads the retries of many consumers that failed together (a poison batch, a restart), so
    they do not hit the backend in lock-step.
    """

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        super().__init__(base_s, cap_s)
        self._rng = rng or random.Random()

    def compute(self, failures: int) -> float:
        return self._rng.uniform(0.0, super().compute(failures))


@dataclass
class RetryPolicy:
    """How a consumer retries a frame whose handler raised.

    Args:
        base_s: delay before the first retry (upper bound of the first jittered draw).
        cap_s: the longest delay between two attempts.
        max_attempts: deliveries before the frame goes to the dead-letter queue (``handler_error``);
            keep it at or below the queue's ``max_deliveries``, which dead-letters with
            ``delivery_limit`` whatever the handler says.
        backoff: the strategy; ``None`` means exponential with full jitter from ``base_s`` and ``cap_s``.
    """

    base_s: float = 0.1
    cap_s: float = 10.0
    max_attempts: int = 5
    backoff: Backoff | None = field(default=None)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: must be at least 1, got {self.max_attempts}")
        if self.backoff is None:
            self.backoff = ExponentialFullJitter(self.base_s, self.cap_s)

    def delay(self, attempts: int) -> float:
        """Seconds to wait before delivering again a frame that failed on delivery number ``attempts``."""
        strategy = self.backoff or ExponentialFullJitter(self.base_s, self.cap_s)
        return strategy.compute(attempts)

    def exhausted(self, attempts: int) -> bool:
        """True when delivery number ``attempts`` was the last one allowed."""
        return attempts >= self.max_attempts
