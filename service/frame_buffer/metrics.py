"""Every Prometheus metric of the service, in one place, all named ``frame_queue_*``.

Label sets are bounded: ``camera`` comes from configuration (one per source), ``group`` from the
configured consumer groups, ``thread`` from the threads the service starts (one per worker and source, and
``publisher``, ``stats``, ``http``), ``reason`` and ``stage`` from the fixed sets below. The dashboards in
``dashboards/`` and the alert rules query exactly these names; ``tests/dashboards`` checks that each query returns
data.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the series count and no dashboard or alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Why a frame was dropped (only the drop policies and the spool limit drop frames).
DROP_REASONS = ("drop_oldest", "drop_newest", "spool_full", "shutdown_timeout")
#: Why an entry was dead-lettered.
DEAD_LETTER_REASONS = (
    "handler_error", "delivery_limit", "missing_header", "missing_payload", "bad_header", "missing_field",
    "bad_version", "truncated", "bad_length", "bad_checksum", "bad_codec", "bad_dtype", "bad_payload",
    "bad_field", "bad_shape", "frame_too_large", "decode_error",
)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}

#: Around the 10 ms end-to-end target, fine below it and coarse above.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
)

#: Fine enough for sub-millisecond stages (a decode, an XADD on loopback), up to a 5 s stall.
STAGE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02,
    0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
#: The stages of ``frame_queue_stage_seconds``, in path order; docs/observability.md says what each measures.
STAGES = ("buffer", "publish", "capture_to_receive", "decode", "handler", "ack")

REGISTRY = CollectorRegistry(auto_describe=True)

published = Counter(
    "frame_queue_published", "Frames accepted by the queue backend.", ["camera"], registry=REGISTRY
)
consumed = Counter(
    "frame_queue_consumed", "Frames delivered to a consumer handler.", ["camera", "group"], registry=REGISTRY
)
acked = Counter("frame_queue_acked", "Frames acknowledged by consumers.", ["camera", "group"], registry=REGISTRY)
redelivered = Counter(
    "frame_queue_redelivered",
    "Deliveries after the first (retries, reclaimed frames of dead consumers).",
    ["camera", "group"],
    registry=REGISTRY,
)
dropped = Counter(
    "frame_queue_dropped", "Frames discarded by an operator-chosen policy, by reason.", ["reason"],
    registry=REGISTRY,
)
dead_lettered = Counter(
    "frame_queue_dead_lettered", "Entries moved to the dead-letter queue, by reason.", ["reason"],
    registry=REGISTRY,
)
publish_errors = Counter(
    "frame_queue_publish_errors", "Backend calls that failed while publishing.", registry=REGISTRY
)
source_gaps = Counter(
    "frame_queue_source_gaps", "Interruptions of a frame source (RTSP reconnects, ...).", ["camera"],
    registry=REGISTRY,
)
thread_restarts = Counter(
    "frame_queue_thread_restarts",
    "Service threads (worker, source, publisher, stats, http) that died and were restarted, by thread.",
    ["thread"],
    registry=REGISTRY,
)

# Per shard stream ("0" with one): a shard that lags names the cameras that wait.
depth = Gauge("frame_queue_depth", "Entries held in the queue (stream length).", ["shard"], registry=REGISTRY)
consumer_lag = Gauge(
    "frame_queue_consumer_lag", "Entries not yet delivered to the group.", ["group", "shard"], registry=REGISTRY
)
pending = Gauge("frame_queue_pending", "Entries delivered but not yet acked.", ["group", "shard"],
                registry=REGISTRY)
oldest_pending = Gauge(
    "frame_queue_oldest_pending_seconds", "Idle time of the group's oldest pending entry.", ["group", "shard"],
    registry=REGISTRY,
)
dead_letter_depth = Gauge(
    "frame_queue_dead_letter_depth", "Entries waiting in the dead-letter queue.", registry=REGISTRY
)

publish_duration = Histogram(
    "frame_queue_publish_duration_seconds", "Time of one publish call to the backend.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
end_to_end_latency = Histogram(
    "frame_queue_end_to_end_latency_seconds", "Capture timestamp to consumer handler start.",
    buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
stage_seconds = Histogram(
    "frame_queue_stage_seconds",
    "Where a frame's time goes, by stage: buffer (admitted -> the publisher takes it), publish (taken -> the "
    "backend stored it), capture_to_receive (the frame's ts -> a consumer received it, wall clock, first "
    "deliveries), decode, handler, ack (the ack call of the frame's batch).",
    ["stage"], buckets=STAGE_BUCKETS, registry=REGISTRY,
)
#: The labelled children, bound once: ``labels()`` costs a dictionary lookup and a lock on every call.
STAGE = {name: stage_seconds.labels(stage=name) for name in STAGES}


def observe_stage(stage: str, elapsed_ns: int, frames: int = 1) -> None:
    """Count ``frames`` frames that each spent ``elapsed_ns`` in ``stage`` (a batch shares one duration)."""
    child, seconds = STAGE[stage], max(elapsed_ns, 0) / 1e9
    for _ in range(frames):
        child.observe(seconds)


buffer_capacity = Gauge(
    "frame_queue_buffer_capacity_frames", "Current capacity of the adaptive buffer.", registry=REGISTRY
)
buffer_frames = Gauge("frame_queue_buffer_frames", "Frames held in the adaptive buffer.", registry=REGISTRY)
buffer_bytes = Gauge("frame_queue_buffer_bytes", "Bytes held in the adaptive buffer.", registry=REGISTRY)
buffer_budget = Gauge(
    "frame_queue_buffer_budget_bytes", "Memory budget shared by the buffer and the spool.", registry=REGISTRY
)
spool_frames = Gauge(
    "frame_queue_spool_frames", "Frames spooled in memory while the backend is unavailable.", registry=REGISTRY
)
spool_bytes = Gauge("frame_queue_spool_bytes", "Bytes spooled in memory.", registry=REGISTRY)
breaker_state = Gauge(
    "frame_queue_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", registry=REGISTRY
)
breaker_transitions = Counter(
    "frame_queue_breaker_transitions", "Circuit breaker state changes, by new state.", ["state"],
    registry=REGISTRY,
)
ready = Gauge(
    "frame_queue_ready", "1 when the backend is reachable and the breaker closed, else 0.", registry=REGISTRY
)


def initialise(cameras: list[str], groups: list[str], shards: int = 1) -> None:
    """Create every labelled series at zero, so dashboards and alerts see them before the first event."""
    for reason in DROP_REASONS:
        dropped.labels(reason=reason)
    for reason in DEAD_LETTER_REASONS:
        dead_lettered.labels(reason=reason)
    for state in BREAKER_STATES:
        breaker_transitions.labels(state=state)
    for camera in cameras:
        published.labels(camera=camera)
        source_gaps.labels(camera=camera)
        for group in groups:
            for counter in (consumed, acked, redelivered):
                counter.labels(camera=camera, group=group)
    for shard in map(str, range(shards)):
        depth.labels(shard=shard)
        for group in groups:
            for gauge in (consumer_lag, pending, oldest_pending):
                gauge.labels(group=group, shard=shard)
