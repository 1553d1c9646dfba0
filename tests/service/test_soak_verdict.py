"""The soak's memory verdict rests on a least-squares slope: it must be exact where the answer is known; and
the RSS it fits is read per pid."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frame_buffer.commands.soak.sampling import rss_mb
from frame_buffer.commands.soak.verdict import MIN_FIT_SAMPLES, least_squares, slope_check

#: Sample times as soak records them: increasing, distinct, in tenths of a second, up to a week.
times = st.lists(st.integers(0, 7 * 864_000), min_size=2, max_size=200, unique=True).map(
    lambda tenths: [t / 10 for t in sorted(tenths)])
finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(times, finite)
def test_a_constant_series_has_slope_zero(xs: list[float], level: float) -> None:
    fit = least_squares(xs, [level] * len(xs))
    assert fit.slope == 0 and fit.slope_stderr == 0
    assert math.isclose(fit.intercept, level, rel_tol=1e-9, abs_tol=1e-9)


@given(times.filter(lambda xs: xs[-1] - xs[0] >= 1), finite, finite)
def test_a_linear_series_gives_its_slope(xs: list[float], intercept: float, slope: float) -> None:
    fit = least_squares(xs, [intercept + slope * x for x in xs])
    # Exact up to the rounding of the ys themselves (each carries an error of about 1e-16 of its size).
    scale = max(abs(intercept + slope * x) for x in xs) / (xs[-1] - xs[0])
    assert math.isclose(fit.slope, slope, rel_tol=1e-9, abs_tol=1e-9 * (1 + scale))
    assert fit.slope_stderr <= 1e-9 * (1 + scale)


@given(times.filter(lambda xs: len(xs) >= 3 and xs[-1] - xs[0] >= 1), finite, st.floats(-1e3, 1e3))
def test_adding_a_constant_or_shifting_time_leaves_the_slope(xs: list[float], shift: float, slope: float) -> None:
    ys = [slope * x + (i % 3) for i, x in enumerate(xs)]  # a line with a wobble
    base = least_squares(xs, ys).slope
    assert math.isclose(least_squares(xs, [y + shift for y in ys]).slope, base, rel_tol=1e-6, abs_tol=1e-6)
    assert math.isclose(least_squares([x + 3600 for x in xs], ys).slope, base, rel_tol=1e-6, abs_tol=1e-6)


def test_noise_around_a_line_is_fitted_with_a_standard_error() -> None:
    xs = [float(x) for x in range(10)]
    fit = least_squares(xs, [2 * x + (1 if x % 2 else -1) for x in xs])
    assert 1.8 < fit.slope < 2.2 and fit.slope_stderr > 0


@pytest.mark.parametrize(("xs", "ys"), [([1.0], [1.0]), ([1.0, 1.0], [1.0, 2.0]), ([1.0, 2.0], [1.0])])
def test_a_fit_needs_two_distinct_times_and_a_y_for_each(xs: list[float], ys: list[float]) -> None:
    with pytest.raises(ValueError, match="need"):
        least_squares(xs, ys)


def test_the_slope_check_is_per_hour_and_not_judged_on_too_few_samples() -> None:
    rows = [{"t": 60.0 * i, "mb": 100 + 0.5 * i} for i in range(10)]  # 0.5 MB a minute: 30 MB/h
    check = slope_check("RSS", rows, "mb", 10.0)
    assert check.passed is False and check.value.startswith("+30.0 MB/h")
    assert slope_check("RSS", rows, "mb", 31.0).passed is True
    short = slope_check("RSS", rows[: MIN_FIT_SAMPLES - 1], "mb", 10.0)
    assert short.passed is None and "run longer" in short.note


def test_rss_is_read_for_a_pid_and_is_none_for_a_process_that_is_gone() -> None:
    """A worker process between two incarnations has no /proc entry: its row shows a gap, the soak goes on."""
    with open("/proc/sys/kernel/pid_max") as limit:
        beyond = int(limit.read()) + 1
    assert (rss_mb(os.getpid()) or 0) > 0 and rss_mb() is not None
    assert rss_mb(beyond) is None
