"""The soak's verdict: each check with its value, its limit and whether it passed.

Memory is judged by its trend, not by two points: a least-squares line through the samples after the warm-up,
its slope given per hour. Two points (the old "last quarter against the second quarter") are at the mercy of
whatever the buffer or the allocator held at those moments; a fit over every sample is not, and its standard
error says how far the slope can be trusted (a 5-minute run's is wide, an hour's narrow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: The fewest samples after the warm-up that a slope is judged on; with fewer the check says so and passes.
MIN_FIT_SAMPLES = 3


@dataclass(frozen=True)
class Fit:
    """A least-squares line ``y = intercept + slope * x``, and the standard error of its slope."""

    slope: float
    intercept: float
    slope_stderr: float


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """The least-squares line through the points (at least two distinct ``xs``). The standard error is 0 for
    two points (a line through two points fits them exactly)."""
    if len(xs) != len(ys):
        raise ValueError(f"need as many xs as ys, got {len(xs)} and {len(ys)}")
    n = len(xs)
    if n < 2:
        raise ValueError(f"need at least two points, got {n}")
    # Measured from the first point, so that a constant series is exactly flat and large values cancel less.
    x0, y0 = xs[0], ys[0]
    us, vs = [x - x0 for x in xs], [y - y0 for y in ys]
    u_mean, v_mean = math.fsum(us) / n, math.fsum(vs) / n
    suu = math.fsum((u - u_mean) ** 2 for u in us)
    if suu == 0:
        raise ValueError("need at least two distinct xs")
    slope = math.fsum((u - u_mean) * (v - v_mean) for u, v in zip(us, vs, strict=True)) / suu
    intercept = y0 + v_mean - slope * (x0 + u_mean)
    residuals = math.fsum(((v - v_mean) - slope * (u - u_mean)) ** 2 for u, v in zip(us, vs, strict=True))
    stderr = math.sqrt(residuals / (n - 2) / suu) if n > 2 else 0.0
    return Fit(slope, intercept, stderr)


@dataclass(frozen=True)
class Check:
    """One line of the verdict. ``passed`` is None when there was too little to judge (not a failure)."""

    name: str
    value: Any
    limit: str
    passed: bool | None
    note: str = ""

    def line(self) -> str:
        mark = {True: "pass", False: "FAIL", None: "n/a "}[self.passed]
        return f"  {mark}  {self.name}: {self.value} (limit {self.limit}){'  ' + self.note if self.note else ''}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def slope_check(name: str, samples: Sequence[dict[str, Any]], key: str, limit_mb_per_h: float) -> Check:
    """The growth of ``sample[key]`` (MB) per hour over ``samples`` (already past the warm-up)."""
    points = [(float(s["t"]), float(s[key])) for s in samples if s.get(key) is not None]
    limit = f"{limit_mb_per_h:g} MB/h"
    if len(points) < MIN_FIT_SAMPLES:
        return Check(name, "-", limit, None, f"only {len(points)} samples after the warm-up, need "
                                                f"{MIN_FIT_SAMPLES}: run longer to judge it")
    fit = least_squares([t / 3600 for t, _ in points], [mb for _, mb in points])
    value = f"{fit.slope:+.1f} MB/h (standard error {fit.slope_stderr:.1f})"
    return Check(name, value, limit, fit.slope <= limit_mb_per_h, f"fit over {len(points)} samples")


def slopes(samples: Sequence[dict[str, Any]], key: str) -> dict[str, float | None]:
    """Informative per-process slopes (MB/h) of the dict-valued ``sample[key]``; None with too few samples."""
    names = dict.fromkeys(name for s in samples for name in s[key])
    found: dict[str, float | None] = {}
    for name in names:
        points = [(float(s["t"]) / 3600, float(s[key][name])) for s in samples if s[key].get(name) is not None]
        found[name] = (round(least_squares([t for t, _ in points], [v for _, v in points]).slope, 1)
                       if len(points) >= MIN_FIT_SAMPLES else None)
    return found


def latency_check(samples: Sequence[dict[str, Any]], limit_ms: float) -> Check:
    """p99 of every interval after the warm-up within the limit (intervals without frames are not judged)."""
    judged = [s for s in samples if s["frames"] > 0]
    limit = f"{limit_ms:g} ms in every interval"
    if not judged:
        return Check("end-to-end p99", "-", limit, None, "no interval after the warm-up had frames")
    over = [s for s in judged if s["p99_ms"] > limit_ms]
    worst = max(judged, key=lambda s: s["p99_ms"])
    note = f"{len(over)} of {len(judged)} intervals over" if over else f"{len(judged)} intervals"
    return Check("end-to-end p99", f"worst {worst['p99_ms']} ms at t={worst['t']} s", limit, not over, note)


def rate_check(samples: Sequence[dict[str, Any]], offered: float, share: float) -> Check:
    """Acked frames/s of every interval after the warm-up at least ``share`` of what the sources offer."""
    limit = f">= {share:g} x {offered:g} offered"
    if not samples:
        return Check("frames/s acked", "-", limit, None, "no interval after the warm-up")
    slowest = min(samples, key=lambda s: s["fps"])
    return Check("frames/s acked", f"lowest {slowest['fps']} at t={slowest['t']} s", limit,
                 slowest["fps"] >= share * offered)


def exact(name: str, value: float | int | bool, expected: float | int | bool) -> Check:
    """A count that must be exactly what is expected (missing frames 0, a clean stop True)."""
    return Check(name, value, f"= {expected}", value == expected)
