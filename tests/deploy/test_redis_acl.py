"""The Redis ACL users of the redis role (``roles/redis/templates/users.acl.j2``), rendered with the role's own
defaults and rules, on real redis-server processes: the service does everything it does as its user and Redis
refuses nothing (an empty ``ACL LOG``), every command the user is granted by name is one the service was seen to
send (``INFO commandstats``), and what it must not do is refused. The same file on a Redis Cluster of local
processes, with redis-py's cluster client as the service's user; and redis_exporter as its user.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml

from frame_buffer.codec import FrameCodec
from frame_buffer.frame import Frame
from frame_buffer.queue.redis_streams.progress import TRIM_SCRIPT
from frame_buffer.queue.redis_streams.queue import RedisStreamsQueue
from frame_buffer.queue.redis_streams.shards import ShardLayout
from tests.cluster_servers import RedisClusterServers
from tests.deploy.conftest import ROOT, unavailable
from tests.servers import RedisServer, free_port, wait_until

ROLE = ROOT / "roles" / "redis"
FRAME_BUFFER = str(Path(sys.executable).with_name("frame-buffer"))
#: The vault's part: passwords with the characters that need care (a space, URL delimiters).
PASSWORDS = {
    "redis_acl_admin_password": "admin pass/word:1",
    "redis_acl_frame_buffer_password": "service p@ss/word:2 %",
    "redis_acl_exporter_password": "exporter#pass word 3",
}
#: What the test's own admin connection sends; everything else INFO commandstats counts is the service's.
ADMIN_ONLY = {"acl|log", "config|resetstat", "info", "script|flush", "xadd"}
#: Connection commands clients send (granted by the @connection category, not by name).
CONNECTION = {"auth", "hello", "ping", "select", "client|setinfo", "wait",
              "command", "command|getkeys", "asking", "readonly"}  # the last four: the cluster client
#: What a master counts of its replicas' replication link (they log in as the admin user).
REPLICATION = {"replconf", "psync", "sync"}
#: Rules by name the standalone run cannot use: the cluster client's slot map (test_service_in_cluster_mode...).
CLUSTER_ONLY = {"cluster|slots"}


def _ansible_hash(data: object, kind: str = "sha1") -> str:
    """Ansible's ``hash`` filter: the hex digest of the UTF-8 text."""
    return hashlib.new(kind, str(data).encode()).hexdigest()


def role_values(**overrides: object) -> dict[str, Any]:
    """The role's defaults and vars with the test's passwords (what Ansible would hand the template)."""
    values: dict[str, Any] = {}
    for part in ("defaults", "vars"):
        values.update(yaml.safe_load((ROLE / part / "main.yml").read_text()) or {})
    return {**values, **PASSWORDS, "ansible_managed": "rendered by tests/deploy/test_redis_acl.py", **overrides}


def render_users(dest: Path, **overrides: object) -> Path:
    """users.acl.j2 rendered with jinja2 as Ansible's template module does (undefined variables fail)."""
    try:
        import jinja2
    except ImportError:
        unavailable("jinja2 (installed with ansible, the deploy extra) is missing: bash scripts/setup.sh --deploy")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
                             trim_blocks=True)  # as Ansible's template module
    env.filters["hash"] = _ansible_hash
    text = env.from_string((ROLE / "templates" / "users.acl.j2").read_text()).render(role_values(**overrides))
    dest.write_text(text)
    return dest


def frame_buffer_rules() -> list[str]:
    rules: list[str] = role_values()["_redis_acl_frame_buffer_rules"]
    return rules


def named_commands() -> set[str]:
    """The commands the service's user is granted by name (``+xadd``), not by category (``+@connection``)."""
    return {rule[1:] for rule in frame_buffer_rules() if rule.startswith("+") and not rule.startswith("+@")}


def service_url(port: int, db: int = 0) -> str:
    password = urllib.parse.quote(PASSWORDS["redis_acl_frame_buffer_password"], safe="")
    return f"redis://frame_buffer:{password}@127.0.0.1:{port}/{db}"


def acl_log(client: redis.Redis) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = client.acl_log()  # type: ignore[assignment]
    return entries


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of our own with the rendered users, logged in as the admin user."""
    users = render_users(tmp_path / "users.acl")
    server = RedisServer(tmp_path / "redis", "--aclfile", str(users), username="admin",
                         password=PASSWORDS["redis_acl_admin_password"]).start()
    try:
        yield server
    finally:
        server.stop()


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``frame-buffer`` as a user runs it, with the service's user in ``env``'s FRAME_BUFFER_REDIS_URL."""
    proc = subprocess.run([FRAME_BUFFER, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **env})
    assert proc.returncode == 0, f"frame-buffer {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def run_service_briefly(env: dict[str, str]) -> None:
    """``frame-buffer run`` with one synthetic camera until it has published and acked frames, then SIGTERM."""
    port = free_port()
    env = {**os.environ, **env, "FRAME_BUFFER_HTTP_HOST": "127.0.0.1"}
    proc = subprocess.Popen([FRAME_BUFFER, "run", "--http-port", str(port), "--source",
                             "synthetic:cam-run:fps=50:size=32x24"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def handled() -> bool:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            return any(line.startswith("frame_queue_acked_total") and not line.endswith(" 0.0")
                       for line in metrics.splitlines())

        wait_until(handled, 60, "frame-buffer run to publish and ack frames", interval=0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out


def write_junk(client: redis.Redis, stream: str) -> None:
    """Two entries no consumer can decode, written as an outsider (the admin): they go to the dead letters."""
    for i in range(2):
        client.xadd(stream, {"h": f"junk{i}"})


def exercise_commands(env: dict[str, str], junk: Callable[[], None]) -> None:
    """The service's commands as its user, each path of them: loadgen (batches in MULTI/EXEC, the trim script by
    EVALSHA and SCRIPT LOAD, the group by XGROUP CREATE MKSTREAM, the backlog by XINFO GROUPS and XLEN), consume
    (XREADGROUP, XACK, XAUTOCLAIM, dead-lettering: TYPE, XADD + XACK in MULTI) of what ``junk`` wrote too, the
    dead letters (dlq list, show, replay, purge one, purge all), the demo, and ``run`` until it handled frames."""
    run_cli(env, "loadgen", "--fps", "400", "--duration", "1.5", "--size", "64x48", "--cameras", "3",
            "--batch", "8", "--json")
    junk()
    run_cli(env, "consume", "--idle-exit", "1", "--json")
    listed = run_cli(env, "dlq", "list", "--json").stdout
    ids = [letter["id"] for letter in json.loads(listed.strip().splitlines()[-1])]
    assert len(ids) == 2, listed
    run_cli(env, "dlq", "show", ids[0])  # XRANGE
    run_cli(env, "dlq", "replay", ids[0])  # XADD + XDEL in MULTI
    run_cli(env, "dlq", "purge", "--yes", ids[1])  # XDEL
    run_cli(env, "consume", "--idle-exit", "0.5")  # the replayed letter goes back to the dead letters
    run_cli(env, "dlq", "purge", "--yes")  # DEL of the dead-letter stream(s)
    run_cli(env, "demo", "--duration", "1", "--fps", "50", "--size", "32x24", "--cameras", "2")
    run_service_briefly(env)


def test_rendered_users_hold_no_password_and_switch_the_default_user_off(tmp_path: Path) -> None:
    text = render_users(tmp_path / "users.acl").read_text()
    for password in PASSWORDS.values():
        assert password not in text
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text
    lines = [line for line in text.splitlines() if line.startswith("user ")]
    assert [line.split()[1] for line in lines] == ["default", "admin", "frame_buffer", "exporter"]
    assert lines[0].split()[2] == "off"
    assert " resetkeys ~frame_queue* " in lines[2]


def test_legacy_password_keeps_old_clients_working_while_migrating(tmp_path: Path) -> None:
    """With redis_acl_legacy_password the default user keeps the password of before (a client that logs in with
    the password alone); the users work beside it; without it the same client is refused."""
    legacy = "the one password of before"
    users = render_users(tmp_path / "users.acl", redis_acl_legacy_password=legacy)
    server = RedisServer(tmp_path / "redis", "--aclfile", str(users), password=legacy, username="default").start()
    try:
        with redis.Redis(port=server.port, password=legacy) as old_client:
            old_client.xadd("frame_queue", {"h": "x", "p": "y"})
        with redis.Redis.from_url(service_url(server.port)) as service:
            assert service.xlen("frame_queue") == 1
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        render_users(users)  # the migration's second step: the default user off, applied with ACL LOAD
        with redis.Redis(port=server.port, password=legacy) as old_client:
            old_client.acl_load()
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=server.port, password=legacy).ping()
    finally:
        server.stop()


def test_service_does_everything_as_its_user_and_nothing_is_refused(acl_redis: RedisServer) -> None:
    """Every command of the service through its own commands and its queue API, as the frame_buffer user."""
    admin = acl_redis.client()
    admin.config_resetstat()
    url = service_url(acl_redis.port)

    exercise_commands({"FRAME_BUFFER_REDIS_URL": url}, lambda: write_junk(admin, "frame_queue"))

    # the queue API's other paths: a nack (XCLAIM JUSTID), a restarted consumer's own pending entry (XPENDING,
    # XCLAIM), stats with a pending entry, a trim after the script cache was flushed (NOSCRIPT, SCRIPT LOAD)
    codec = FrameCodec()
    queue = RedisStreamsQueue(url, codec=codec)
    try:
        queue.publish(Frame("cam-api", 0, np.zeros((24, 32, 3), dtype=np.uint8)))
        deliveries = queue.consume("workers", "api-0", count=1, block_ms=1000)
        assert deliveries
        queue.nack(deliveries[0], delay_s=60)
        assert queue.stats("workers").pending == 1
    finally:
        queue.close()
    restarted = RedisStreamsQueue(url, codec=codec)
    try:
        again = restarted.consume("workers", "api-0", count=1, block_ms=1000)
        assert [d.id for d in again] == [d.id for d in deliveries]
        restarted.ack(again)
        admin.script_flush()
        restarted.trim()
    finally:
        restarted.close()

    # what the role's verify.yml and the coming replica acks send as this user: XINFO STREAM, WAIT; SELECT
    with redis.Redis.from_url(url) as client:
        assert client.xinfo_stream("frame_queue")["length"] >= 0
        assert client.wait(0, 100) == 0
    with redis.Redis.from_url(service_url(acl_redis.port, db=1)) as client:
        assert client.ping()

    assert acl_log(admin) == [], "Redis refused the service something"
    used = {name.removeprefix("cmdstat_") for name in admin.info("commandstats")}
    service = used - ADMIN_ONLY - CONNECTION
    assert service <= named_commands(), f"sent but not granted by name: {sorted(service - named_commands())}"
    unused = named_commands() - used - CLUSTER_ONLY
    assert not unused, f"granted but never sent (take them away, or exercise them here): {sorted(unused)}"


def test_service_user_is_refused_what_it_must_not_do(acl_redis: RedisServer) -> None:
    admin = acl_redis.client()
    admin.acl_log_reset()
    with redis.Redis.from_url(service_url(acl_redis.port)) as client:
        for name, call in {
            "flushall": client.flushall,
            "config|get": lambda: client.config_get("maxmemory"),
            "keys": lambda: client.keys("*"),
            "set": lambda: client.set("frame_queue:x", "1"),
            "xadd elsewhere": lambda: client.xadd("elsewhere", {"f": "v"}),
            "xadd under another prefix": lambda: client.xadd("other:frame_queue", {"f": "v"}),
            "evalsha elsewhere": lambda: client.evalsha(client.script_load(TRIM_SCRIPT), 1, "elsewhere"),
        }.items():
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
                pytest.fail(f"{name} was allowed")
    reasons = {(entry["username"], entry["reason"]) for entry in acl_log(admin)}
    assert reasons == {("frame_buffer", "command"), ("frame_buffer", "key")}
    with pytest.raises(redis.AuthenticationError):  # the default user is off: no login, nothing
        redis.Redis(port=acl_redis.port).ping()
    password = PASSWORDS["redis_acl_exporter_password"]
    with redis.Redis(port=acl_redis.port, username="exporter", password=password) as exporter:
        assert exporter.xlen("frame_queue") == 0
        with pytest.raises(redis.exceptions.NoPermissionError):
            exporter.xadd("frame_queue", {"f": "v"})


def test_exporter_scrapes_as_its_user(acl_redis: RedisServer) -> None:
    """Debian's redis_exporter (the one of the local image) with REDIS_USER/REDIS_PASSWORD, as the role runs it."""
    exporter = "/usr/bin/prometheus-redis-exporter"
    if not Path(exporter).exists():
        unavailable("prometheus-redis-exporter is not installed: bash scripts/setup.sh")
    admin = acl_redis.client()
    admin.xadd("frame_queue", {"h": "x", "p": "y"})
    admin.xgroup_create("frame_queue", "workers", id="0")
    admin.acl_log_reset()
    port = free_port()
    env = {**os.environ, "REDIS_USER": "exporter", "REDIS_PASSWORD": PASSWORDS["redis_acl_exporter_password"]}
    proc = subprocess.Popen([exporter, f"-redis.addr=redis://127.0.0.1:{acl_redis.port}",
                             f"-web.listen-address=127.0.0.1:{port}", "-check-streams=frame_queue*"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        metrics: list[str] = []

        def scraped() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                metrics[:] = reply.read().decode().splitlines()
            return True

        wait_until(scraped, 30, "redis_exporter's /metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "redis_up 1" in metrics
    assert any(line.startswith("redis_stream_length{") for line in metrics), "the stream checks read nothing"
    assert acl_log(admin) == [], "Redis refused the exporter something"


@pytest.mark.cluster
def test_service_in_cluster_mode_as_its_user(tmp_path: Path) -> None:
    """The same users on every node of a six-node cluster (replicas log in to their masters as the admin user),
    the service's commands in cluster mode (FRAME_BUFFER_REDIS_MODE=cluster, 16 shard streams, a WAIT for one
    replica after each publish) as its user: no node refused anything, and the cluster rules are all needed."""
    users = render_users(tmp_path / "users.acl")
    admin_password = PASSWORDS["redis_acl_admin_password"]
    cluster = RedisClusterServers(
        tmp_path / "cluster",
        node_extra=("--aclfile", str(users), "--masteruser", "admin", "--masterauth", admin_password),
        username="admin", password=admin_password).start()
    try:
        password = urllib.parse.quote(PASSWORDS["redis_acl_frame_buffer_password"], safe="")
        env = {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_REPLICA_ACKS": "1",
               "FRAME_BUFFER_REDIS_URL": ",".join(f"redis://frame_buffer:{password}@127.0.0.1:{node.port}/0"
                                                  for node in cluster.nodes)}
        junk_key = ShardLayout("frame_queue", 16, cluster=True).stream_key(0)
        junk_master, masters = cluster.master_of_key(junk_key), cluster.masters()
        for node in cluster.nodes:  # from here on, what the masters count is the service's (and the lines below)
            with node.client() as client:
                client.config_resetstat()

        def junk() -> None:
            with junk_master.client() as client:
                write_junk(client, junk_key)

        exercise_commands(env, junk)

        used: set[str] = set()
        for node in masters:
            with node.client() as client:
                used |= {name.removeprefix("cmdstat_") for name in client.info("commandstats")}
        for node in cluster.nodes:
            with node.client() as client:
                assert acl_log(client) == [], f"node {node.port} refused the service something"
    finally:
        cluster.stop()
    service = used - ADMIN_ONLY - CONNECTION - REPLICATION
    assert service <= named_commands(), f"sent but not granted by name: {sorted(service - named_commands())}"
    assert used >= CLUSTER_ONLY, f"cluster rules the client never used: {sorted(CLUSTER_ONLY - used)}"
