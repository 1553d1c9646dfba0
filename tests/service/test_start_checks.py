"""Everything ``run`` can be told wrong stops the start with one line and exit 2, before any thread starts;
what is only unavailable (a camera, the backend) starts degraded and says why on /readyz."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.servers import RedisServer, free_port, wait_until
from tests.service.running import FRAME_BUFFER, RunningService


def run_fails(env: dict[str, str]) -> tuple[int, str]:
    """``frame-buffer run`` that must not start: its exit code and its one line of stderr."""
    base = {"FRAME_BUFFER_HTTP_HOST": "127.0.0.1", "FRAME_BUFFER_HTTP_PORT": str(free_port()),
            "FRAME_BUFFER_STREAM": "test_start_checks_never_written"}
    result = subprocess.run([FRAME_BUFFER, "run"], env={**os.environ, **base, **env}, capture_output=True,
                            text=True, timeout=60, check=False)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return result.returncode, lines[0]


@pytest.fixture(scope="module")
def not_a_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "notes.mp4"
    path.write_text("this is not a video\n")
    return path


CONFIG = "frame-buffer: configuration error: "


@pytest.mark.parametrize(
    ("sources", "line"),
    [
        ("synthetic:cam0:fps=abc", "FRAME_BUFFER_SOURCES: source synthetic:cam0: fps: must be a number >= 0 "
                                   "(0: as fast as possible), got 'abc'"),
        ("synthetic:cam0:size=12by5", "FRAME_BUFFER_SOURCES: source synthetic:cam0: size: must be WIDTHxHEIGHT, "
                                      "got '12by5'"),
        ("synthetic:cam0:fps=-5", "FRAME_BUFFER_SOURCES: source synthetic:cam0: fps: must be a number >= 0 "
                                  "(0: as fast as possible), got '-5'"),
        ("synthetic:cam0:bogus=1", "FRAME_BUFFER_SOURCES: source synthetic:cam0: unknown option 'bogus'; "
                                   "synthetic takes fps, size"),
        ("file:cam1", "FRAME_BUFFER_SOURCES: source file:cam1: needs path=FILE"),
        ("file:cam1:path=/nonexistent/a.mp4", "FRAME_BUFFER_SOURCES: source file:cam1: cannot open "
                                              "/nonexistent/a.mp4: No such file or directory"),
        ("rtsp:cam2", "FRAME_BUFFER_SOURCES: source rtsp:cam2: needs url=rtsp://HOST[:PORT]/PATH"),
        ("rtsp:cam2:url=http://h/x", "FRAME_BUFFER_SOURCES: source rtsp:cam2: url: must start with rtsp:// or "
                                     "rtsps://, got 'http://h/x'"),
        ("synthetic:cam0,synthetic:cam0:fps=5", "FRAME_BUFFER_SOURCES: camera cam0 is given twice"),
    ],
)
def test_a_wrong_source_stops_the_start_with_one_line(sources: str, line: str) -> None:
    assert run_fails({"FRAME_BUFFER_SOURCES": sources}) == (2, CONFIG + line)


def test_a_file_that_cannot_be_decoded_stops_the_start(not_a_video: Path) -> None:
    code, line = run_fails({"FRAME_BUFFER_SOURCES": f"file:cam1:path={not_a_video}"})
    assert code == 2
    assert line == (f"{CONFIG}FRAME_BUFFER_SOURCES: source file:cam1: cannot open {not_a_video}: "
                    "Invalid data found when processing input")


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"FRAME_BUFFER_SOURCES": "synthetic:cam0:size=64x48", "FRAME_BUFFER_MAX_FRAME_BYTES": "1000"},
         "FRAME_BUFFER_SOURCES: source synthetic:cam0: a 64x48 RGB frame is 9216 bytes, over max_frame_bytes "
         "1000 (FRAME_BUFFER_MAX_FRAME_BYTES)"),
        ({"FRAME_BUFFER_BUFFER_BUDGET_BYTES": "1000"},
         "FRAME_BUFFER_SOURCES: source synthetic:cam0: a 640x480 RGB frame is 921600 bytes: with its header and "
         "bookkeeping it can never fit buffer_budget_bytes 1000 (FRAME_BUFFER_BUFFER_BUDGET_BYTES)"),
        ({"FRAME_BUFFER_STALL_TIMEOUT_S": "10"},
         "FRAME_BUFFER_STALL_TIMEOUT_S: must be longer than FRAME_BUFFER_PUBLISH_TIMEOUT_S (30 s, the longest "
         "wait under backpressure), got 10"),
        ({"FRAME_BUFFER_HTTP_HOST": "192.0.2.1"},  # TEST-NET-1: an address of no interface here
         "FRAME_BUFFER_HTTP_HOST: cannot listen on 192.0.2.1:{port}: Cannot assign requested address"),
        ({"FRAME_BUFFER_BACKEND": "memory", "FRAME_BUFFER_WORKER_PROCESSES": "2"},
         "FRAME_BUFFER_WORKER_PROCESSES: worker processes need a shared backend (redis or rabbitmq); the memory "
         "backend lives in one process"),
        ({"FRAME_BUFFER_BACKEND": "memory", "FRAME_BUFFER_ROLE": "ingest"},
         "FRAME_BUFFER_ROLE: role ingest needs a shared backend (redis or rabbitmq); the memory backend lives in "
         "one process"),
        ({"FRAME_BUFFER_CONSUMER_PREFIX": "p" * 199, "FRAME_BUFFER_WORKER_PROCESSES": "10"},
         "FRAME_BUFFER_CONSUMER_PREFIX: the worker processes' prefix <prefix>-<process> must be at most 200 bytes, "
         "got 201"),
        ({"FRAME_BUFFER_ROLE": "both"}, "FRAME_BUFFER_ROLE: must be one of all, ingest, workers, got 'both'"),
    ],
)
def test_settings_that_cannot_work_together_stop_the_start(env: dict[str, str], line: str) -> None:
    port = free_port()
    assert run_fails({"FRAME_BUFFER_HTTP_PORT": str(port), **env}) == (2, CONFIG + line.format(port=port))


@pytest.mark.parametrize("host", ["999.1.1.1", "no-such-host.invalid"])
def test_an_http_host_that_is_no_address_stops_the_start(host: str) -> None:
    code, line = run_fails({"FRAME_BUFFER_HTTP_HOST": host})
    assert code == 2
    assert line.startswith(f"{CONFIG}FRAME_BUFFER_HTTP_HOST: ") and host in line, line


def test_an_http_port_in_use_stops_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, line = run_fails({"FRAME_BUFFER_HTTP_PORT": str(port)})
    assert (code, line) == (2, f"{CONFIG}FRAME_BUFFER_HTTP_PORT: cannot listen on 127.0.0.1:{port}: "
                               "Address already in use")


# -- the backend ----------------------------------------------------------------------------------------------
@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that wants the password ``pw`` (RedisServer.start pings without one)."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir(parents=True, exist_ok=True)
    args = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--dir", str(server.workdir),
            "--save", "", "--appendonly", "no", "--requirepass", "pw", "--logfile", str(server.workdir / "redis.log")]
    server.process = subprocess.Popen(args)
    client = redis.Redis(port=server.port, password="pw")
    wait_until(client.ping, 30, f"redis-server on port {server.port}")
    client.close()
    yield server
    server.stop()


@pytest.mark.parametrize(("credentials", "reply"), [(":wrong@", "WRONGPASS"), ("", "NOAUTH")])
def test_credentials_the_backend_refuses_stop_the_start(locked_redis: RedisServer, credentials: str,
                                                         reply: str) -> None:
    url = f"redis://{credentials}127.0.0.1:{locked_redis.port}/0"
    code, line = run_fails({"FRAME_BUFFER_REDIS_URL": url})
    assert code == 2
    assert line.startswith(f"frame-buffer: redis at 127.0.0.1:{locked_redis.port} refused"), line
    assert reply in line and "wrong" not in line.replace("WRONGPASS", "")


def test_a_stream_key_of_another_type_stops_the_start(stream_name: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set(stream_name, "not a stream")
    try:
        code, line = run_fails({"FRAME_BUFFER_REDIS_URL": REDIS_URL, "FRAME_BUFFER_STREAM": stream_name})
    finally:
        client.delete(stream_name)
    assert code == 2 and stream_name in line, line


def test_credentials_revoked_while_running_show_on_readyz_and_the_spool_is_accounted_for_at_stop(
    tmp_path: Path, locked_redis: RedisServer
) -> None:
    port = locked_redis.port
    service = RunningService(tmp_path, {"FRAME_BUFFER_REDIS_URL": f"redis://:pw@127.0.0.1:{port}/0",
                                        "FRAME_BUFFER_SOURCES": "synthetic:cam0:fps=50:size=16x16",
                                        "FRAME_BUFFER_WORKERS": "1", "FRAME_BUFFER_DRAIN_TIMEOUT_S": "2"})
    try:
        wait_until(lambda: service.get("/readyz")[0] == 200, 30, "readiness")
        admin = redis.Redis(port=port, password="pw")
        admin.config_set("requirepass", "revoked")
        admin.client_kill_filter(_type="normal", skipme=True)  # connections authenticated before stay otherwise
        admin.close()
        wait_until(lambda: any(reason.startswith(f"authentication refused by 127.0.0.1:{port}")
                               for reason in service.json("/readyz")["reasons"]), 30, "the refusal on /readyz")
        wait_until(lambda: service.json("/readyz")["spool_frames"] > 0, 30, "frames to be spooled")
        assert service.get("/readyz")[0] == 503
        assert service.get("/healthz")[0] == 200, "refused credentials are not a reason to restart the container"
    finally:
        code = service.terminate()
    assert code == 1, service.log()
    messages = service.messages()
    (lost,) = [m for m in messages if m.startswith("drain timeout: ")]
    assert "are not published, counted as dropped (shutdown_timeout): authentication refused by" in lost
    held = int(lost.split()[2])
    drained = json.loads(next(m for m in messages if m.startswith("producer drained")).split(": ", 1)[1])
    assert drained["dropped"] == {"shutdown_timeout": held} and held > 0
    assert drained["submitted"] == drained["published"] + held


def test_an_rtsp_camera_nobody_serves_starts_degraded_and_stops_at_once(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    service = RunningService(tmp_path, {**service_env, "FRAME_BUFFER_SOURCES": f"rtsp:cam0:url={url}",
                                        "FRAME_BUFFER_WORKERS": "1", "FRAME_BUFFER_DRAIN_TIMEOUT_S": "300"})
    try:
        wait_until(lambda: service.get("/readyz")[0] == 503, 30, "/readyz to report the camera")
        ready = service.json("/readyz")
        assert f"{url}: Connection refused" in ready["sources"]["cam0"]
        assert ready["reasons"] == [f"source cam0: {ready['sources']['cam0']}"]
        assert service.get("/healthz")[0] == 200
        wait_until(lambda: service.metric('frame_queue_source_gaps_total{camera="cam0"}') >= 2, 30, "reconnects")
    finally:
        code = service.terminate(timeout=60)  # far below the 300 s drain timeout: nothing waits for the camera
    assert code == 0, service.log()
    assert "stopped cleanly" in service.messages()
