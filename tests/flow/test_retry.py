"""Backoff strategies and the retry policy."""

from __future__ import annotations

import random

import pytest

from frame_buffer.flow.retry import (
    ConstantBackoff,
    ExponentialBackoff,
    ExponentialFullJitter,
    NoBackoff,
    RetryPolicy,
)


def test_constant_and_none() -> None:
    assert [ConstantBackoff(0.5).compute(n) for n in (1, 2, 10)] == [0.5, 0.5, 0.5]
    assert NoBackoff().compute(7) == 0.0
    with pytest.raises(ValueError):
        ConstantBackoff(-1)


def test_exponential_doubles_up_to_the_cap() -> None:
    backoff = ExponentialBackoff(base_s=0.1, cap_s=1.0)
    assert [backoff.compute(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.compute(10_000) == 1.0  # no float overflow far past the cap


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    backoff = ExponentialFullJitter(base_s=0.1, cap_s=1.0, rng=random.Random(1))
    for failures in range(1, 12):
        ceiling = min(1.0, 0.1 * 2 ** (failures - 1))
        draws = [backoff.compute(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2, "draws spread over the whole range"


def test_retry_policy_defaults_to_full_jitter_from_its_base_and_cap() -> None:
    policy = RetryPolicy(base_s=0.2, cap_s=3.0, max_attempts=3)
    assert isinstance(policy.backoff, ExponentialFullJitter)
    assert (policy.backoff.base_s, policy.backoff.cap_s) == (0.2, 3.0)
    assert not policy.exhausted(2) and policy.exhausted(3)
    swapped = RetryPolicy(backoff=ConstantBackoff(0.01))
    assert swapped.delay(4) == 0.01
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
