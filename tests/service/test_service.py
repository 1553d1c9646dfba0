"""``frame-buffer run`` as a real process: endpoints, metrics, graceful shutdown, degraded mode."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import redis

from frame_buffer.wake_latency import current_bound_us
from tests.conftest import REDIS_URL
from tests.servers import RedisServer, wait_until
from tests.service.running import FRAME_BUFFER, RunningService


def test_sigterm_mid_stream_loses_nothing_and_leaves_nothing_pending(
    tmp_path: Path, service_env: dict[str, str], stream_name: str
) -> None:
    service = RunningService(tmp_path, {**service_env, "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=300:size=64x48",
                                        "FRAME_BUFFER_WORKERS": "3"})
    wait_until(lambda: service.metric("frame_queue_acked_total") >= 300, 60, "300 acked frames")
    assert service.terminate() == 0, service.log_path.read_text()
    drained, acked = service.drain_summary()
    client = redis.Redis.from_url(REDIS_URL)
    (group,) = client.xinfo_groups(stream_name)
    pending = client.xpending(stream_name, "workers")
    print(f"published {drained['published']} acked {acked} left in stream for the next run {group['lag']} "
          f"pending {pending['pending']} dropped {drained['dropped']}")
    assert drained["submitted"] == drained["published"] and not drained["dropped"]
    assert pending["pending"] == 0, "the stopped consumers left frames pending"
    assert acked + group["lag"] == drained["published"], "a published frame was neither acked nor kept"


def test_endpoints_and_metrics_pass_promtool(tmp_path: Path, service_env: dict[str, str]) -> None:
    service = RunningService(tmp_path, {**service_env, "FRAME_BUFFER_SOURCES": "synthetic:cam7:fps=50:size=32x24"})
    try:
        wait_until(lambda: service.metric("frame_queue_acked_total") > 10, 60, "acked frames")
        wait_until(lambda: service.get("/readyz")[0] == 200, 30, "readiness")
        assert json.loads(service.get("/readyz")[1])["status"] == "ready"
        assert service.get("/nothing")[0] == 404
        _, text = service.get("/metrics")
        for name in (
            'frame_queue_published_total{camera="cam7"}', 'frame_queue_dropped_total{reason="drop_oldest"}',
            'frame_queue_dead_lettered_total{reason="bad_checksum"}',
            'frame_queue_consumer_lag{group="workers",shard="0"}',
            "frame_queue_end_to_end_latency_seconds_bucket", "frame_queue_breaker_state", "frame_queue_ready 1.0",
        ):
            assert name in text, f"{name} missing from /metrics"
        promtool = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True,
                                  check=False)
        assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    finally:
        assert service.terminate() == 0


def test_readyz_reports_degraded_while_redis_is_down(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    service = RunningService(tmp_path, {"FRAME_BUFFER_REDIS_URL": server.url,
                                        "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=20:size=16x16"})
    try:
        wait_until(lambda: service.get("/readyz")[0] == 200, 30, "readiness")
        server.kill()
        wait_until(lambda: service.get("/readyz")[0] == 503, 30, "/readyz to report degraded")
        wait_until(lambda: json.loads(service.get("/readyz")[1])["backend_reachable"] is False, 30,
                   "/readyz to see the backend unreachable")
        assert json.loads(service.get("/readyz")[1])["status"] == "degraded"
        assert service.get("/healthz")[0] == 200, "alive while degraded"
        server.start()
        wait_until(lambda: service.get("/readyz")[0] == 200, 60, "readiness after Redis came back")
    finally:
        service.terminate()
        server.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAME_BUFFER_WORKERS": "two"}, "FRAME_BUFFER_WORKERS: must be an integer"),
        ({"FRAME_BUFFER_HANDLER": "no_such_module:handle"}, "FRAME_BUFFER_HANDLER: cannot load"),
        ({"FRAME_BUFFER_SOURCES": "webcam:x"}, "FRAME_BUFFER_SOURCES"),
        ({"FRAME_BUFFER_CPU_WAKE_LATENCY_US": "-5"}, "FRAME_BUFFER_CPU_WAKE_LATENCY_US: must be 0 to"),
    ],
)
def test_wrong_configuration_stops_the_start(env: dict[str, str], message: str) -> None:
    result = subprocess.run([FRAME_BUFFER, "run"], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_the_cpu_wake_latency_bound_is_held_while_running_and_released_at_stop(
    tmp_path: Path, service_env: dict[str, str], unbounded: int
) -> None:
    service = RunningService(tmp_path, {**service_env, "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=50:size=16x16",
                                        "FRAME_BUFFER_CPU_WAKE_LATENCY_US": "0"})
    try:
        assert current_bound_us() == 0
        assert any("wake-up latency bound of 0 us" in event["msg"] for event in service.events())
    finally:
        assert service.terminate() == 0
    assert current_bound_us() == unbounded
