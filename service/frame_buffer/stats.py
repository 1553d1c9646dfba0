"""Small helpers to summarise latencies and rates the same way in every command."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentiles_ms(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and p99.9 of latency samples in milliseconds (zeros when there are none)."""
    if not samples_ms:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0}
    values = np.percentile(np.asarray(samples_ms, dtype=np.float64), [50, 99, 99.9])
    return {"p50": round(float(values[0]), 3), "p99": round(float(values[1]), 3), "p999": round(float(values[2]), 3)}


def rate(count: int, seconds: float) -> float | None:
    """``count / seconds`` rounded to 0.1, or None when no time passed to measure it over."""
    return round(count / seconds, 1) if seconds > 0 else None
