"""Flow control above the :class:`~frame_buffer.queue.FrameQueue`: backpressure, the adaptive buffer, the
circuit breaker and spool, retries with backoff, and the producer and worker that put them together."""

from frame_buffer.flow.backpressure import POLICIES, Policy, parse_policy
from frame_buffer.flow.breaker import CircuitBreaker, CircuitOpen
from frame_buffer.flow.buffer import AdaptiveBuffer, FrameOverBudget, MemoryBudget
from frame_buffer.flow.producer import Producer
from frame_buffer.flow.retry import (
    Backoff,
    ConstantBackoff,
    ExponentialBackoff,
    ExponentialFullJitter,
    NoBackoff,
    RetryPolicy,
)
from frame_buffer.flow.spool import Spool
from frame_buffer.flow.worker import Worker

__all__ = [
    "POLICIES",
    "AdaptiveBuffer",
    "Backoff",
    "CircuitBreaker",
    "CircuitOpen",
    "ConstantBackoff",
    "ExponentialBackoff",
    "ExponentialFullJitter",
    "FrameOverBudget",
    "MemoryBudget",
    "NoBackoff",
    "Policy",
    "Producer",
    "RetryPolicy",
    "Spool",
    "Worker",
    "parse_policy",
]
