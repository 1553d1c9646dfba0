"""Backoff strategies: how long to wait after a number of consecutive failures.

The one backoff of the package, on its bottom floor so that every layer can use it: the queue backends
(RabbitMQ reconnection), the flow layer (handler retries, the circuit breaker's cool-down), the sources (camera
reconnection) and the supervisor (restarts). Modelled on redis-py's ``redis/backoff.py`` (a strategy is an
object with one method, ``compute(failures)``), but not that module itself: its exponential strategies
compute ``base * 2**failures`` unclamped, which raises ``OverflowError`` after about a thousand failures in
a row (a camera away for a few hours), and count from 0 where ours count the first failure as 1.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from frame_buffer.errors import ConfigError

#: Exponents past this are clamped: 2**64 times any base is far beyond every cap, and 2**1100 overflows a float.
_MAX_EXPONENT = 64


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
            raise ConfigError(f"delay_s: must not be negative, got {delay_s}")
        self.delay_s = delay_s

    def compute(self, failures: int) -> float:
        return self.delay_s


class ExponentialBackoff(Backoff):
    """``base * 2**(failures-1)``, capped: deterministic, so easy to reason about in tests."""

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0) -> None:
        if base_s < 0 or cap_s < 0:
            raise ConfigError(f"base_s and cap_s: must not be negative, got {base_s}, {cap_s}")
        self.base_s = base_s
        self.cap_s = cap_s

    def compute(self, failures: int) -> float:
        exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
        return float(min(self.cap_s, self.base_s * 2**exponent))


class ExponentialFullJitter(ExponentialBackoff):
    """A uniform draw in ``[0, min(cap, base * 2**(failures-1))]`` ("full jitter").

    Jitter spreads the retries of many clients that failed together (a poison batch, a restart), so they do
    not hit the backend in lock-step.
    """

    def __init__(self, base_s: float = 0.1, cap_s: float = 10.0, rng: random.Random | None = None) -> None:
        super().__init__(base_s, cap_s)
        self._rng = rng or random.Random()

    def compute(self, failures: int) -> float:
        return self._rng.uniform(0.0, super().compute(failures))
