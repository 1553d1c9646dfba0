"""The service image: built on the local debootstrap base, run against Redis, stopped with ``docker stop``."""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.servers import free_port, wait_until

ROOT = Path(__file__).parents[2]
IMAGE = "frame-buffer-local/frame-buffer:local"
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def sh(*args: str, timeout: float = 900) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def image() -> str:
    """The service image from service/Dockerfile on the local base (cached by content hash)."""
    sh("bash", "scripts/docker-engine.sh")
    sh("bash", "scripts/base-image.sh", "service", timeout=1800)
    return IMAGE


@pytest.fixture
def container(image: str, stream_name: str) -> Iterator[tuple[str, int]]:
    name, port = f"fb-test-{uuid.uuid4().hex[:8]}", free_port()
    sh("docker", "run", "-d", "--name", name, "--network", "host",
       "-e", f"FRAME_BUFFER_REDIS_URL={REDIS_URL}", "-e", f"FRAME_BUFFER_STREAM={stream_name}",
       "-e", "FRAME_BUFFER_HTTP_HOST=127.0.0.1", "-e", f"FRAME_BUFFER_HTTP_PORT={port}",
       "-e", "FRAME_BUFFER_SOURCES=synthetic:cam0:fps=200:size=64x48", "-e", "FRAME_BUFFER_LOG_FORMAT=json",
       "-e", "FRAME_BUFFER_CONSUMER_PREFIX=container", image)
    yield name, port
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    redis.Redis.from_url(REDIS_URL).delete(stream_name, f"{stream_name}:dlq")


def acked(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("frame_queue_acked_total{"))


def test_container_serves_metrics_is_healthy_and_stops_cleanly(container: tuple[str, int], stream_name: str) -> None:
    name, port = container
    wait_until(lambda: acked(port) >= 200, 120, "the container to ack 200 frames")
    wait_until(lambda: sh("docker", "inspect", "-f", "{{.State.Health.Status}}", name).strip() == "healthy",
               90, "the HEALTHCHECK to report healthy")
    assert sh("docker", "inspect", "-f", "{{.Config.User}}", name).strip() not in ("", "root", "0")
    sh("docker", "stop", "-t", "60", name, timeout=120)
    assert sh("docker", "inspect", "-f", "{{.State.ExitCode}}", name).strip() == "0"
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True).stderr
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    drained = next(json.loads(e["msg"].split(": ", 1)[1]) for e in events if e["msg"].startswith("producer drained"))
    done = sum(json.loads(e["msg"].split(": ", 1)[1])["acked"] for e in events
               if e["msg"].startswith("worker container-"))
    client = redis.Redis.from_url(REDIS_URL)
    (group,) = client.xinfo_groups(stream_name)
    print(f"container: published {drained['published']} acked {done} kept {group['lag']} "
          f"pending {group['pending']} dropped {drained['dropped']}")
    assert drained["submitted"] == drained["published"] and not drained["dropped"]
    assert group["pending"] == 0
    assert done + group["lag"] == drained["published"]
