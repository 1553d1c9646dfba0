"""The retry policy of consumers: how often a frame whose handler raised is delivered again, and after how long.

The delays come from the package's one backoff (:mod:`frame_buffer.backoff`); its strategies are re-exported
here for the flow layer's callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from frame_buffer.backoff import Backoff, ConstantBackoff, ExponentialBackoff, ExponentialFullJitter, NoBackoff

__all__ = ["Backoff", "ConstantBackoff", "ExponentialBackoff", "ExponentialFullJitter", "NoBackoff", "RetryPolicy"]


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
        assert self.backoff is not None  # set by __post_init__
        return self.backoff.compute(attempts)

    def exhausted(self, attempts: int) -> bool:
        """True when delivery number ``attempts`` was the last one allowed."""
        return attempts >= self.max_attempts
