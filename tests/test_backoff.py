"""The package's one backoff (frame_buffer/backoff.py): strategies used by the queue, flow, sources and supervisor."""

from __future__ import annotations

import random

import pytest

from frame_buffer.backoff import ConstantBackoff, ExponentialBackoff, ExponentialFullJitter, NoBackoff
from frame_buffer.errors import ConfigError


def test_constant_and_none() -> None:
    assert [ConstantBackoff(0.5).compute(n) for n in (1, 2, 10)] == [0.5, 0.5, 0.5]
    assert NoBackoff().compute(7) == 0.0
    with pytest.raises(ValueError):
        ConstantBackoff(-1)


def test_exponential_doubles_up_to_the_cap() -> None:
    backoff = ExponentialBackoff(base_s=0.1, cap_s=1.0)
    assert [backoff.compute(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.compute(10_000) == 1.0  # no float overflow far past the cap


def test_exponential_counts_the_first_failure_as_one_and_never_overflows() -> None:
    backoff = ExponentialBackoff(base_s=0.5, cap_s=30.0)
    assert backoff.compute(0) == backoff.compute(1) == 0.5
    assert backoff.compute(1100) == backoff.compute(10**12) == 30.0  # redis-py's 0.5 * 2**1100 raises OverflowError
    assert ExponentialFullJitter(0.5, 30.0, rng=random.Random(1)).compute(10**12) <= 30.0


def test_negative_delays_are_a_configuration_error() -> None:
    for make in (lambda: ConstantBackoff(-0.1), lambda: ExponentialBackoff(-1, 1), lambda: ExponentialBackoff(1, -1)):
        with pytest.raises(ConfigError, match="must not be negative"):
            make()


def test_full_jitter_stays_within_the_exponential_envelope() -> None:
    backoff = ExponentialFullJitter(base_s=0.1, cap_s=1.0, rng=random.Random(1))
    for failures in range(1, 12):
        ceiling = min(1.0, 0.1 * 2 ** (failures - 1))
        draws = [backoff.compute(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2, "draws spread over the whole range"
