"""The retry policy (the backoff strategies it uses are tested in tests/test_backoff.py)."""

from __future__ import annotations

import pytest

from frame_buffer.backoff import ConstantBackoff, ExponentialFullJitter
from frame_buffer.flow.retry import RetryPolicy


def test_retry_policy_defaults_to_full_jitter_from_its_base_and_cap() -> None:
    policy = RetryPolicy(base_s=0.2, cap_s=3.0, max_attempts=3)
    assert isinstance(policy.backoff, ExponentialFullJitter)
    assert (policy.backoff.base_s, policy.backoff.cap_s) == (0.2, 3.0)
    assert not policy.exhausted(2) and policy.exhausted(3)
    swapped = RetryPolicy(backoff=ConstantBackoff(0.01))
    assert swapped.delay(4) == 0.01
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_retry_policy_delays_within_its_envelope() -> None:
    policy = RetryPolicy(base_s=0.2, cap_s=3.0)
    assert all(0.0 <= policy.delay(attempts) <= min(3.0, 0.2 * 2 ** (attempts - 1)) for attempts in range(1, 30))
