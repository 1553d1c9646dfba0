"""The PromQL of the ``frame-queue`` dashboard and of ``frame-buffer report``, each expression written once.

An expression depends on where it is shown: the dashboard rates over Grafana's ``$__rate_interval`` and
filters by its variables (``camera=~"$camera"``, ...); ``report`` rates over a window of its own and does not
filter (every camera, group and instance). :class:`Queries` holds those two choices and renders every
expression with them, so that the two cannot drift apart again. Standard library only:
``dashboards/generate.py`` imports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The histograms of the service (``metrics.py``).
END_TO_END = "frame_queue_end_to_end_latency_seconds"
PUBLISH_DURATION = "frame_queue_publish_duration_seconds"
#: Where the time goes: one histogram, a ``stage`` label per stage of the service path.
STAGE_SECONDS = "frame_queue_stage_seconds"

#: The dashboard's label filters: label -> the template variable that holds its regex.
DASHBOARD_FILTERS = {"camera": "$camera", "group": "$group", "instance": "$redis", "stream": "$stream"}


@dataclass(frozen=True)
class Queries:
    """Every expression, rendered with one rate window and one set of label filters.

    Args:
        window: the range of ``rate()`` and ``increase()``: ``$__rate_interval`` on the dashboard, ``30s``...
        filters: label -> regex the series must match; a label without one is not filtered. The expressions
            choose which labels they filter by (those their metric carries), the caller only their values.
    """

    window: str = "$__rate_interval"
    filters: Mapping[str, str] = field(default_factory=lambda: dict(DASHBOARD_FILTERS))

    # -- building blocks -----------------------------------------------------------------------------------
    def select(self, metric: str, *labels: str) -> str:
        """``metric{label=~"regex", ...}`` with the filters of ``labels`` that are set; ``metric`` without any."""
        matchers = [f'{label}=~"{self.filters[label]}"' for label in labels if label in self.filters]
        return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric

    def _over_window(self, function: str, metric: str, *labels: str) -> str:
        return f"{function}({self.select(metric, *labels)}[{self.window}])"

    def _sum_rate(self, metric: str, by: str | None, *labels: str) -> str:
        grouping = f" by ({by}) " if by else ""
        return f"sum{grouping}({self._over_window('rate', metric, *labels)})"

    def _sum_increase(self, metric: str, by: str, *labels: str) -> str:
        return f"sum by ({by}) ({self._over_window('increase', metric, *labels)})"

    def quantile(self, q: float, histogram: str, by: str | None = None) -> str:
        """The q-quantile of a histogram across every instance and label (``by="stage"``: one per stage)."""
        grouping = f"le, {by}" if by else "le"
        return f"histogram_quantile({q}, sum by ({grouping}) ({self._over_window('rate', histogram + '_bucket')}))"

    def stage_quantile(self, q: float) -> str:
        """The q-quantile of each stage of the service path (``frame_queue_stage_seconds``)."""
        return self.quantile(q, STAGE_SECONDS, by="stage")

    # -- throughput ----------------------------------------------------------------------------------------
    def published(self, by: str | None = None) -> str:
        """Frames/s accepted by the queue backend (``by="camera"``: per camera)."""
        return self._sum_rate("frame_queue_published_total", by, "camera")

    def consumed(self, by: str | None = "group") -> str:
        """Frames/s handed to consumers."""
        return self._sum_rate("frame_queue_consumed_total", by, "camera", "group")

    def acked(self, by: str | None = None) -> str:
        """Frames/s acknowledged by consumers."""
        return self._sum_rate("frame_queue_acked_total", by, "camera", "group")

    def redelivered(self) -> str:
        """Deliveries after the first, per group, per second."""
        return self._sum_rate("frame_queue_redelivered_total", "group", "camera", "group")

    def publish_errors(self) -> str:
        """Failed publish calls per second."""
        return self._sum_rate("frame_queue_publish_errors_total", None)

    # -- backlog -------------------------------------------------------------------------------------------
    def depth(self) -> str:
        """Entries held in the queue: every shard stream's length, each read once (every service instance
        exports the same gauges, hence the ``max`` per shard before the sum)."""
        return "sum(max by (shard) (frame_queue_depth))"

    def by_group(self, gauge: str) -> str:
        """A gauge of the groups summed over the shards (``frame_queue_consumer_lag``, ``_pending``)."""
        return f"sum by (group) (max by (group, shard) ({self.select(gauge, 'group')}))"

    def oldest_by_group(self, gauge: str = "frame_queue_oldest_pending_seconds") -> str:
        """The oldest pending entry's idle time of each group, over all shards."""
        return f"max by (group) ({self.select(gauge, 'group')})"

    def by_shard(self, gauge: str) -> str:
        """A gauge of the groups per shard stream: which shard (which cameras) lags."""
        return f"max by (group, shard) ({self.select(gauge, 'group')})"

    # -- losses --------------------------------------------------------------------------------------------
    def dropped(self) -> str:
        """Frames dropped in the window, per reason."""
        return self._sum_increase("frame_queue_dropped_total", "reason")

    def dead_lettered(self) -> str:
        """Frames dead-lettered in the window, per reason."""
        return self._sum_increase("frame_queue_dead_lettered_total", "reason")

    def dead_letter_depth(self) -> str:
        return "max(frame_queue_dead_letter_depth)"

    def source_gaps(self) -> str:
        """Frames a source skipped in the window, per camera."""
        return self._sum_increase("frame_queue_source_gaps_total", "camera", "camera")

    def thread_restarts(self) -> str:
        """Service threads restarted in the window, per thread."""
        return self._sum_increase("frame_queue_thread_restarts_total", "thread")

    # -- flow control --------------------------------------------------------------------------------------
    def breaker_state(self, by: str | None = None) -> str:
        """0 closed, 1 half-open, 2 open: the worst (of each ``by``)."""
        return f"max by ({by}) (frame_queue_breaker_state)" if by else "max(frame_queue_breaker_state)"

    def breaker_transitions(self) -> str:
        return self._sum_increase("frame_queue_breaker_transitions_total", "state")

    def ready(self) -> str:
        """1 when every instance is ready."""
        return "min(frame_queue_ready)"

    def total(self, gauge: str) -> str:
        """A gauge summed over instances (buffer and spool frames and bytes, the budget)."""
        return f"sum({gauge})"

    # -- Redis (redis_exporter) ----------------------------------------------------------------------------
    def redis(self, metric: str) -> str:
        """A Redis gauge per instance."""
        return self.select(metric, "instance")

    def redis_min(self, metric: str) -> str:
        """A Redis gauge's lowest value over the instances (up, AOF status, uptime)."""
        return f"min({self.redis(metric)})"

    def redis_rate(self, metric: str) -> str:
        """A Redis counter per second, per instance."""
        return self._over_window("rate", metric, "instance")

    def redis_increase(self, metric: str) -> str:
        """A Redis counter's increase in the window, per instance."""
        return self._over_window("increase", metric, "instance")

    def redis_memory_used_total(self) -> str:
        """Bytes Redis uses, over every instance."""
        return f"sum({self.redis('redis_memory_used_bytes')})"

    def redis_memory_max_total(self) -> str:
        """``maxmemory`` over the instances that have one (0 means no limit)."""
        return f"sum({self.redis('redis_memory_max_bytes')} > 0)"

    def stream(self, metric: str) -> str:
        """A per-stream (or per stream group) gauge of the exporter's stream checks."""
        return self.select(metric, "instance", "stream")

    def stream_group_lag_s(self) -> str:
        """Stream time between the newest entry and the group's last delivered one (ids are milliseconds)."""
        return (f"({self.stream('redis_stream_last_generated_id')} - on (instance, db, stream) group_right "
                f"{self.stream('redis_stream_group_last_delivered_id')}) / 1000")
