"""A real monitoring stack for the dashboard tests: Redis, redis_exporter, the service and Prometheus.

Everything listens on free loopback ports and keeps its data in a temporary directory; nothing touches the
Redis on 6379. Readiness is awaited by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
#: The stream key pattern the exporter's stream checks scan for (the service's stream and its DLQ).
STREAM_PATTERN = "frame_queue*"


def tool(name: str) -> str:
    """Path of a required binary, or a clear failure naming how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run scripts/setup.sh (it installs Debian's prometheus, "
            "promtool and prometheus-redis-exporter)"
        )
    return path


def frame_buffer_cli() -> str:
    """The ``frame-buffer`` entry point next to the running interpreter (the project's .venv)."""
    beside = Path(sys.executable).parent / "frame-buffer"
    return str(beside) if beside.exists() else tool("frame-buffer")


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0, proc: Popen | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.process.poll() is not None:
            pytest.fail(f"{proc.name} exited with {proc.process.returncode} while waiting for {what}:\n{proc.tail()}")
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")


@dataclass
class Popen:
    """A started process with its log file, stopped at teardown."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        """The end of the process's output, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Popen:
    """Start ``argv`` with its output in ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    return Popen(name, process, log)


def http_get(url: str, timeout_s: float = 5.0) -> bytes:
    """The body of a GET, raising OSError on any failure."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


@dataclass
class Prometheus:
    """Client for the Prometheus HTTP API of the test stack."""

    url: str
    redis_url: str = ""
    processes: dict[str, Popen] = field(default_factory=dict)

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data``, raises ValueError with Prometheus's error otherwise."""
        query = urllib.parse.urlencode(params)
        try:
            body = http_get(f"{self.url}/api/v1/{path}?{query}")
        except urllib.error.HTTPError as exc:
            body = exc.read()
        reply = json.loads(body)
        if reply.get("status") != "success":
            raise ValueError(f"{reply.get('errorType')}: {reply.get('error')}")
        return reply["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result as a list of samples (scalars become one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        """Values of ``label`` on the series selected by ``match``."""
        values: list[str] = self.api(f"label/{label}/values", **{"match[]": match})
        return values

    def logs(self) -> str:
        """The tails of every process's log, for failure messages."""
        return "\n".join(f"--- {name} ---\n{proc.tail()}" for name, proc in self.processes.items())


def prometheus_config(workdir: Path, service_port: int, exporter_port: int) -> Path:
    """The repository's dashboards/prometheus.yml with local targets, 1s intervals and absolute rule paths."""
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str(DASHBOARDS / pattern) for pattern in config["rule_files"]]
    targets = {"frame-buffer": f"127.0.0.1:{service_port}", "redis": f"127.0.0.1:{exporter_port}"}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def service_argv_env(redis_port: int, http_port: int) -> tuple[list[str], dict[str, str]]:
    """``frame-buffer run`` against the test Redis, with synthetic cameras and consumers."""
    env = dict(os.environ)
    env.update(
        FRAME_BUFFER_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        FRAME_BUFFER_HTTP_PORT=str(http_port),
        FRAME_BUFFER_HTTP_HOST="127.0.0.1",
        FRAME_BUFFER_DRAIN_TIMEOUT_S="5",
        FRAME_BUFFER_SOURCES="synthetic:cam0:fps=50:size=320x240,synthetic:cam1:fps=50:size=320x240",
    )
    return [frame_buffer_cli(), "run"], env


def targets_up(prom: Prometheus) -> bool:
    """True once every active target's last scrape succeeded."""
    targets = prom.api("targets")["activeTargets"]
    return len(targets) == 2 and all(target["health"] == "up" for target in targets)


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Prometheus]:
    """Redis, redis_exporter, ``frame-buffer run`` under load and Prometheus scraping both every second.

    Every process is stopped on exit; logs and data stay in ``workdir``.
    """
    redis_port, exporter_port, service_port, prom_port = (free_port() for _ in range(4))
    prom = Prometheus(f"http://127.0.0.1:{prom_port}", redis_url=f"redis://127.0.0.1:{redis_port}/0")
    procs = prom.processes
    try:
        redis_args = f"--port {redis_port} --bind 127.0.0.1 --appendonly yes --dir {workdir} --maxmemory 512mb"
        procs["redis"] = start(
            "redis",
            [tool("redis-server"), *redis_args.split(), "--maxmemory-policy", "noeviction", "--save", ""],
            workdir,
        )
        exporter_args = f"-redis.addr redis://127.0.0.1:{redis_port} -web.listen-address 127.0.0.1:{exporter_port}"
        procs["redis_exporter"] = start(
            "redis_exporter",
            [tool("prometheus-redis-exporter"), *exporter_args.split(), "-check-streams", STREAM_PATTERN],
            workdir,
        )
        argv, env = service_argv_env(redis_port, service_port)
        procs["frame-buffer"] = start("frame-buffer", argv, workdir, env)
        config = prometheus_config(workdir, service_port, exporter_port)
        prometheus_args = f"--storage.tsdb.path={workdir / 'tsdb'} --web.listen-address=127.0.0.1:{prom_port}"
        procs["prometheus"] = start(
            "prometheus", [tool("prometheus"), f"--config.file={config}", *prometheus_args.split()], workdir
        )
        for name, url in (
            ("frame-buffer", f"http://127.0.0.1:{service_port}/metrics"),
            ("redis_exporter", f"http://127.0.0.1:{exporter_port}/metrics"),
            ("prometheus", f"{prom.url}/-/ready"),
        ):
            wait_for(f"{name} to answer on {url}", lambda url=url: http_get(url), proc=procs[name])
        wait_for("Prometheus to scrape both targets as up", lambda: targets_up(prom), proc=procs["prometheus"])
        yield prom
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
