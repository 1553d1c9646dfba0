"""Where the time goes, as ``soak`` and ``demo`` print it at the end (and the bench's service-path case will):
p50, p99 and mean of each stage of ``frame_queue_stage_seconds`` between two snapshots, so that a run shows its own
frames only. A snapshot reads this process's registry, or the families it is given: ``soak`` gives
``Service.metric_families()``, which adds its worker processes' histograms, so their stages count too.

Quantiles come from the histogram's buckets (linear interpolation inside a bucket, as Prometheus's
``histogram_quantile`` does), so they are as fine as ``metrics.STAGE_BUCKETS``. ``transit`` (publish returned
-> a consumer received the frame) is not measured per frame: the entry carries no publish time, and the wire
format stays as it is. It is derived from the means, which subtract where quantiles do not:
``capture_to_receive - buffer - publish`` (what is left is the source's hand-over and encode, a few
microseconds, and the time on the wire and in the queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from prometheus_client.metrics_core import Metric

from frame_buffer import metrics

STAGE_FAMILY = "frame_queue_stage_seconds"
#: Cumulative bucket counts: (upper bound in seconds, observations at or below it).
Buckets = list[tuple[float, float]]


@dataclass(frozen=True)
class StageSnapshot:
    """One stage's histogram at one moment."""

    buckets: Buckets
    total_s: float

    @property
    def count(self) -> float:
        return observations(self.buckets)


def observations(buckets: Buckets) -> float:
    """How many observations cumulative buckets hold (the +Inf bucket's count)."""
    return buckets[-1][1] if buckets else 0.0


def snapshot(families: Iterable[Metric] | None = None) -> dict[str, StageSnapshot]:
    """Every stage's buckets and sum now, from ``families`` (default: this process's own histogram)."""
    buckets: dict[str, Buckets] = {stage: [] for stage in metrics.STAGES}
    sums = dict.fromkeys(metrics.STAGES, 0.0)
    chosen = metrics.stage_seconds.collect() if families is None else families
    for family in chosen:
        if family.name != STAGE_FAMILY:
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            if stage not in buckets:
                continue
            if sample.name.endswith("_bucket"):
                buckets[stage].append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name.endswith("_sum"):
                sums[stage] = float(sample.value)
    return {stage: StageSnapshot(sorted(buckets[stage]), sums[stage]) for stage in metrics.STAGES}


def counter_total(families: Iterable[Metric], name: str) -> float:
    """The sum of counter ``name`` over all its labels (``name`` without ``_total``)."""
    return sum(float(s.value) for family in families if family.name == name for s in family.samples
               if s.name == f"{name}_total")


def histogram_buckets(families: Iterable[Metric], name: str) -> Buckets:
    """Cumulative buckets of the unlabelled histogram ``name`` among ``families`` (empty when absent)."""
    for family in families:
        if family.name == name:
            return sorted((float(s.labels["le"]), float(s.value)) for s in family.samples if s.name.endswith("_bucket"))
    return []


def quantile_ms(before: Buckets, after: Buckets, q: float) -> float:
    """Quantile of the observations between two histogram snapshots, by linear interpolation in the bucket."""
    deltas = [(le, count - before[i][1]) for i, (le, count) in enumerate(after)] if before else after
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return 0.0
    rank, lower, previous = q * total, 0.0, 0.0
    for le, cumulative in deltas:
        if cumulative >= rank:
            if le == float("inf"):
                return lower * 1000
            share = (rank - previous) / max(cumulative - previous, 1e-9)
            return (lower + (le - lower) * share) * 1000
        lower, previous = le, cumulative
    return lower * 1000


def breakdown(before: dict[str, StageSnapshot], after: dict[str, StageSnapshot]) -> list[dict[str, Any]]:
    """One row per stage (path order), then the derived ``transit`` mean: frames, p50, p99 and mean in ms."""
    rows: list[dict[str, Any]] = []
    means: dict[str, float] = {}
    for stage in metrics.STAGES:
        start, end = before[stage], after[stage]
        frames = end.count - start.count
        mean_ms = (end.total_s - start.total_s) / frames * 1000 if frames > 0 else 0.0
        means[stage] = mean_ms
        rows.append({
            "stage": stage, "frames": int(frames),
            "p50_ms": round(quantile_ms(start.buckets, end.buckets, 0.5), 3),
            "p99_ms": round(quantile_ms(start.buckets, end.buckets, 0.99), 3), "mean_ms": round(mean_ms, 3),
        })
    transit = means["capture_to_receive"] - means["buffer"] - means["publish"]
    rows.append({"stage": "transit (derived)", "frames": None, "p50_ms": None, "p99_ms": None,
                 "mean_ms": round(transit, 3)})
    return rows


def print_breakdown(rows: list[dict[str, Any]], out: TextIO) -> None:
    """The rows as a table; the derived transit row says how it was derived."""
    print("where the time goes (frame_queue_stage_seconds, this run):", file=out)
    print(f"  {'stage':<20} {'frames':>9} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}", file=out)
    for row in rows:
        cells = [_cell(row[key]) for key in ("frames", "p50_ms", "p99_ms", "mean_ms")]
        note = "  = capture_to_receive - buffer - publish (means)" if row["frames"] is None else ""
        print(f"  {row['stage']:<20} {cells[0]:>9} {cells[1]:>9} {cells[2]:>9} {cells[3]:>9}{note}", file=out)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
