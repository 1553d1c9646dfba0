"""A real monitoring stack for the dashboard tests: Redis, redis_exporter, the service and Prometheus.

Everything listens on free loopback ports and keeps its data in a temporary directory; nothing touches the
Redis on 6379. Readiness is awaited by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import functools
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

import jinja2
import pytest
import yaml

from frame_buffer.queue.redis_streams.shards import ShardLayout
from frame_buffer.queue.settings import DEFAULT_STREAM
from tests.cluster_servers import RedisClusterServers

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
#: The prometheus role's template and defaults: the cluster stack runs the configuration it renders.
ROLE = REPO / "roles" / "prometheus"
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


def render_role_config(**variables: Any) -> dict[str, Any]:
    """roles/prometheus's prometheus.yml as its template task renders it: the role's defaults with
    ``variables`` over them, Jinja2 with Ansible's template defaults (``trim_blocks``), and the two Ansible
    filters the template uses. A filter or variable it does not know fails the rendering."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    environment.filters["to_json"] = json.dumps
    environment.filters["to_nice_yaml"] = lambda value, indent=2: yaml.safe_dump(value, indent=indent)
    values = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values.update(ansible_managed="rendered by tests/dashboards/stack.py", **variables)
    text = environment.from_string((ROLE / "templates" / "prometheus.yml.j2").read_text()).render(values)
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def cluster_prometheus_config(workdir: Path, cluster: RedisClusterServers, exporter_port: int) -> Path:
    """The role's configuration for every node of ``cluster`` scraped through the exporter's /scrape endpoint,
    with 1s intervals and the repository's rule files; no frame-buffer target (the service does not run)."""
    config = render_role_config(
        prometheus_redis_targets=[f"redis://127.0.0.1:{node.port}" for node in cluster.nodes],
        prometheus_redis_exporter_targets=[f"127.0.0.1:{exporter_port}"],
        prometheus_frame_buffer_targets=[],
    )
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config["rule_files"] = [str(DASHBOARDS / "alerts" / "*.yml")]
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


def targets_up(prom: Prometheus, count: int = 2) -> bool:
    """True once there are ``count`` active targets and the last scrape of each succeeded."""
    targets = prom.api("targets")["activeTargets"]
    return len(targets) == count and all(target["health"] == "up" for target in targets)


def start_prometheus(workdir: Path, config: Path, port: int) -> Popen:
    """Debian's prometheus with ``config``, its data in ``workdir``."""
    args = f"--storage.tsdb.path={workdir / 'tsdb'} --web.listen-address=127.0.0.1:{port}"
    return start("prometheus", [tool("prometheus"), f"--config.file={config}", *args.split()], workdir)


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
        procs["prometheus"] = start_prometheus(workdir, prometheus_config(workdir, service_port, exporter_port),
                                               prom_port)
        for name, url in (
            ("frame-buffer", f"http://127.0.0.1:{service_port}/metrics"),
            ("redis_exporter", f"http://127.0.0.1:{exporter_port}/metrics"),
            ("prometheus", f"{prom.url}/-/ready"),
        ):
            wait_for(f"{name} to answer on {url}", functools.partial(http_get, url), proc=procs[name])
        wait_for("Prometheus to scrape both targets as up", lambda: targets_up(prom), proc=procs["prometheus"])
        yield prom
    finally:
        for proc in reversed(procs.values()):
            proc.stop()


#: Shard streams the cluster stack writes (the service's default number in cluster mode).
CLUSTER_SHARDS = 16
#: The consumer group of the shard streams the cluster stack writes.
CLUSTER_GROUP = "workers"


@contextlib.contextmanager
def shard_streams(cluster: RedisClusterServers, shards: int = CLUSTER_SHARDS) -> Iterator[ShardLayout]:
    """The service's shard streams and dead-letter streams on ``cluster``, spread over its masters by their hash
    tags, each with entries, a consumer group and pending entries: what the exporter's stream checks report.
    Deleted on exit (the cluster is shared by the session's cluster tests)."""
    layout = ShardLayout(DEFAULT_STREAM, shards, cluster=True)
    client = cluster.client()
    try:
        for stream, dead_letters in layout.shard_keys():
            for index in range(10):
                client.xadd(stream, {"frame": str(index)})
            client.xgroup_create(stream, CLUSTER_GROUP, id="0")
            client.xreadgroup(CLUSTER_GROUP, "consumer-0", {stream: ">"}, count=3)
            client.xadd(dead_letters, {"reason": "test"})
        yield layout
    finally:
        for keys in layout.shard_keys():
            for key in keys:
                client.delete(key)
        client.close()


@contextlib.contextmanager
def running_cluster_stack(workdir: Path, cluster: RedisClusterServers) -> Iterator[Prometheus]:
    """One redis_exporter for every node of a running ``cluster`` (its multi-target /scrape endpoint, no
    -redis.addr of its own) and Prometheus with the prometheus role's configuration for those nodes.

    The service is not part of it (it has no cluster mode yet): the Redis panels and alerts are what it shows.
    """
    exporter_port, prom_port = free_port(), free_port()
    prom = Prometheus(f"http://127.0.0.1:{prom_port}")
    procs = prom.processes
    try:
        exporter_args = f"-redis.addr= -web.listen-address 127.0.0.1:{exporter_port} -check-streams {STREAM_PATTERN}"
        procs["redis_exporter"] = start(
            "redis_exporter", [tool("prometheus-redis-exporter"), *exporter_args.split()], workdir
        )
        procs["prometheus"] = start_prometheus(workdir, cluster_prometheus_config(workdir, cluster, exporter_port),
                                               prom_port)
        for name, url in (
            ("redis_exporter", f"http://127.0.0.1:{exporter_port}/metrics"),
            ("prometheus", f"{prom.url}/-/ready"),
        ):
            wait_for(f"{name} to answer on {url}", functools.partial(http_get, url), proc=procs[name])
        wait_for(f"Prometheus to scrape all {len(cluster.nodes)} nodes as up",
                 lambda: targets_up(prom, len(cluster.nodes)), proc=procs["prometheus"])
        yield prom
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
