"""The command line as a user runs it: real processes, real Redis, JSON summaries checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.servers import free_port

FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FRAME_BUFFER, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def last_json(output: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def test_loadgen_writes_what_consume_reads(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        loaded = run("loadgen", "--fps", "200", "--duration", "1", "--size", "64x48", "--cameras", "2",
                     "--stream", stream_name, "--json")
        assert loaded.returncode == 0, loaded.stderr
        summary = last_json(loaded.stdout)
        assert set(summary) >= {"published", "fps", "seconds"}
        published = int(summary["published"])  # type: ignore[call-overload]
        assert 150 <= published <= 201
        assert client.xlen(stream_name) == published
        consumed = run("consume", "--group", "audit", "--stream", stream_name, "--idle-exit", "1", "--json")
        assert consumed.returncode == 0, consumed.stderr
        result = last_json(consumed.stdout)
        assert result["consumed"] == published and result["dead_lettered"] == 0
        assert set(result["latency_ms"]) == {"p50", "p99", "p999"}  # type: ignore[arg-type]
        again = run("consume", "--group", "audit", "--stream", stream_name, "--idle-exit", "0.2", "--json")
        assert last_json(again.stdout)["consumed"] == 0, "acked frames came back"
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_consume_stops_at_max_frames(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        run("loadgen", "--fps", "0", "--duration", "0.3", "--size", "16x16", "--stream", stream_name)
        result = run("consume", "--group", "g", "--stream", stream_name, "--max-frames", "7", "--json")
        assert last_json(result.stdout)["consumed"] == 7
    finally:
        client.delete(stream_name, f"{stream_name}:dlq")


def test_demo_on_the_memory_backend_loses_nothing() -> None:
    result = run("demo", "--backend", "memory", "--duration", "1", "--fps", "50", "--size", "32x24")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backend memory" in result.stdout
    table = dict(line.split(None, 1) for line in result.stdout.splitlines()[-7:] if line.strip())
    assert table["lost"].strip() == "0" and table["duplicates"].strip() == "0"
    assert_every_stage_counted(result.stdout)


def assert_every_stage_counted(output: str) -> None:
    """The demo's breakdown lists every stage of the path, each having counted every frame (counts, not times)."""
    from frame_buffer.metrics import STAGES

    assert "where the time goes" in output
    (frames,) = (line.split()[-1] for line in output.splitlines() if line.strip().startswith("frames in "))
    counted = {cells[0]: cells[1] for cells in (line.split() for line in output.splitlines()) if cells[:1]
               and cells[0] in STAGES}
    assert counted == dict.fromkeys(STAGES, frames), output


def test_demo_starts_a_throwaway_redis_when_none_answers() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = run("demo", "--redis-url", url, "--duration", "1", "--fps", "50", "--size", "32x24")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "throwaway redis-server" in result.stdout
    assert "lost" in result.stdout
    assert_every_stage_counted(result.stdout)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRAME_BUFFER_MAX_LAG": "lots"}, "FRAME_BUFFER_MAX_LAG: must be an integer, got 'lots'"),
        ({"FRAME_BUFFER_BACKEND": "kafka"}, "FRAME_BUFFER_BACKEND: must be one of redis, rabbitmq, memory"),
        ({"FRAME_BUFFER_REDIS_URL": "http://x"}, "FRAME_BUFFER_REDIS_URL: must start with redis://"),
    ],
)
def test_wrong_configuration_fails_at_start_naming_the_field(env: dict[str, str], message: str) -> None:
    result = run("loadgen", "--duration", "0.1", env=env)
    assert result.returncode == 2
    assert message in result.stderr


def test_unreachable_redis_is_reported_with_its_address() -> None:
    port = free_port()
    result = run("loadgen", "--duration", "0.5", "--fps", "20", "--redis-url", f"redis://127.0.0.1:{port}/0",
                 env={"FRAME_BUFFER_DRAIN_TIMEOUT_S": "1"})
    assert result.returncode == 3
    assert f"redis at 127.0.0.1:{port} unavailable" in result.stderr  # the breaker's log lines
    last = result.stderr.splitlines()[-1]
    assert f"frames not published: redis at 127.0.0.1:{port} did not answer" in last
    assert "backpressure" not in result.stderr


def test_a_latency_run_whose_producer_died_fails_with_its_exit_code() -> None:
    from frame_buffer.commands.bench import harness

    crashed = harness.start_producer(sys.exit, 3)
    crashed.join()
    with pytest.raises(RuntimeError, match="producer exited with code 3 after 5 of 10 frames"):
        harness.producer_gone(crashed, 5, 10)
    running = harness.start_producer(time.sleep, 60)
    try:
        harness.producer_gone(running, 5, 10)  # still producing: the run waits on
        assert running.is_alive()
    finally:
        running.terminate()
        running.join()


def test_bench_prints_the_table_and_json() -> None:
    result = run("bench", "--scale", "0.02", "--repeat", "1", "--latency-seconds", "0.2", "--json",
                 "--cpu-wake-latency-us", "0", "--worker-processes", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    data = last_json(result.stdout)
    assert data["cpu_wake_latency_us"] == 0 and "CPU wake-up latency bound: 0 us held" in result.stdout
    assert data["idle_governor"] == Path("/sys/devices/system/cpu/cpuidle/current_governor_ro").read_text().strip()
    rows = data["rows"]
    assert [row["size"] for row in rows] == ["100KB", "640x480x3", "1920x1080x3"]  # type: ignore[index,union-attr]
    assert all(row["frames_per_s"] > 0 and row["baseline_frames_per_s"] > 0 for row in rows)  # type: ignore[index,union-attr]
    assert rows[0]["p99_ms"] > 0 and rows[0]["baseline_p99_ms"] > 0  # type: ignore[index]
    assert "ratio" in result.stdout
    # The service path (source -> Producer -> Redis -> a worker process), alternated with the 100KB latency runs.
    service: dict[str, Any] = data["service_path"]  # type: ignore[assignment]
    assert service["layout"]["worker_processes"] == 1 and service["failed_audits"] == 0
    (run_,) = service["runs"]
    assert run_["audited"] and run_["lost"] == 0 and run_["published"] == run_["acked"] > 0
    assert run_["p99_ms"] > 0 and run_["backend_p99_ms"] > 0 and run_["raw_p99_ms"] > 0
    assert set(service["cases"]) == {"service path", "backend only", "raw redis-py"}
    # The breakdown adds up both processes: buffer and publish are timed in this one, the rest in the child.
    timed = {row["stage"]: row["frames"] for row in service["stages"]}
    assert all(timed[stage] > 0 for stage in ("buffer", "publish", "capture_to_receive", "decode", "handler", "ack"))
    assert "service path:" in result.stdout and "best service run, by stage:" in result.stdout


def test_bench_refuses_a_wake_latency_bound_it_cannot_hold_before_measuring() -> None:
    result = run("bench", "--cpu-wake-latency-us", "-1")
    assert result.returncode == 2
    assert "argument --cpu-wake-latency-us: must not be negative, got -1" in result.stderr
    assert "frames/s" not in result.stdout
