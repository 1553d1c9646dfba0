"""Failover drills of ``bench --failover-drills``: SIGKILL a cluster master, time the first publish accepted
through the backend, start the node again from its own config file, wait until the cluster is whole."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from frame_buffer.checks import masked_url
from frame_buffer.codec import FrameCodec

#: How long one drill may take from the SIGKILL to the first accepted publish, and the cluster to heal after it.
from frame_buffer.commands.bench.cluster import RedisTarget, members
from frame_buffer.frame import Frame
from frame_buffer.queue import QueueError, QueueSettings, open_queue
from frame_buffer.queue.redis_streams.shards import ShardLayout

#: How long one drill may take from the SIGKILL to the first accepted publish, and the cluster to heal after it.
DRILL_TIMEOUT_S = 60.0
HEAL_TIMEOUT_S = 60.0
#: The drill's publisher retries this often, as the issue's "first accepted publish" is timed.
RETRY_S = 0.01
#: Loopback names: a node the bench may SIGKILL runs on this machine.
_LOCAL = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Node:
    """A cluster node as its own ``INFO server`` describes it: enough to SIGKILL it and start it again."""

    host: str
    port: int
    pid: int
    executable: str
    config_file: str

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def _node(host: str, port: int) -> Node:
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        info = client.info("server")
    return Node(host, port, int(info["process_id"]), str(info.get("executable", "")),
                str(info.get("config_file", "")))


def drill_problem(target: RedisTarget) -> str | None:
    """Why the bench could not SIGKILL and restart ``target``'s masters, or None."""
    if not target.cluster:
        return "needs a Redis Cluster (--redis-mode cluster or --cluster-url)"
    if target.masters < 3:
        return (f"{target.label}: a failover needs at least 3 masters to vote, the cluster at "
                f"{masked_url(target.url)} has {target.masters}")
    client = target.client()
    try:
        nodes = members(client)
        masters = [n for n in nodes if n.master]
        if len(nodes) < 2 * len(masters):
            return f"{target.label}: every master needs a replica to promote, {len(nodes)} node(s) for {len(masters)}"
        for node in nodes:
            if node.host not in _LOCAL:
                return f"{target.label}: node {node.name} is not on this machine, the bench cannot restart it"
            found = _node(node.host, node.port)
            if not found.config_file or not found.executable:
                return (f"{target.label}: node {node.name} was not started from a config file, the bench cannot "
                        "restart it (start the cluster with scripts/local-cluster.sh)")
            try:
                os.kill(found.pid, 0)
            except OSError as exc:
                return f"{target.label}: node {node.name} (pid {found.pid}) cannot be signalled by this user: {exc}"
    finally:
        client.close()
    return None


@dataclass
class Drill:
    """One SIGKILL of a master and what followed."""

    killed: str  # the master's address
    promoted: str  # the master serving the shard afterwards
    seconds: float | None  # SIGKILL to the first publish accepted; None: none within DRILL_TIMEOUT_S
    failed_attempts: int  # publishes refused meanwhile (each retried 10 ms later)
    errors: list[str] = field(default_factory=list)  # the kinds of error seen, once each


def _whole(target: RedisTarget, expected: int) -> bool:
    """Every node up and agreeing: state ok, ``expected`` nodes known, none failing, every replica in sync."""
    host, port = _seed_address(target)
    with redis.Redis(host=host, port=port, socket_timeout=2) as seed:
        nodes: dict[str, dict[str, Any]] = seed.execute_command("CLUSTER NODES")
    if len(nodes) != expected:
        return False
    for address, fields in nodes.items():
        if any(flag in str(fields["flags"]) for flag in ("fail", "handshake", "noaddr")):
            return False
        node_host, _, node_port = address.rpartition(":")
        with redis.Redis(host=node_host, port=int(node_port.partition("@")[0]), socket_timeout=2) as client:
            info = client.execute_command("CLUSTER INFO")
            if str(info.get("cluster_state")) != "ok" or int(info.get("cluster_known_nodes", 0)) != expected:
                return False
            replication = client.info("replication")
            if replication["role"] == "slave" and (replication.get("master_link_status") != "up"
                                                   or replication.get("master_sync_in_progress")):
                return False
    return True


def _seed_address(target: RedisTarget) -> tuple[str, int]:
    """The first seed of ``target`` that is up (a killed master may be the first seed)."""
    for seed in target.url.split(","):
        client = redis.Redis.from_url(seed, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError:
            continue
        finally:
            client.close()
        host = client.connection_pool.connection_kwargs["host"]
        return str(host), int(client.connection_pool.connection_kwargs["port"])
    raise redis.ConnectionError("no seed answers")


def wait_whole(target: RedisTarget, expected: int, timeout_s: float = HEAL_TIMEOUT_S) -> None:
    """Poll (every 50 ms) until :func:`_whole`; raise ``TimeoutError`` naming the target after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError, ValueError):
            if _whole(target, expected):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target.label}: the cluster was not whole again {timeout_s:.0f} s after a drill")
        time.sleep(0.05)


@contextlib.contextmanager
def _drill_queue(target: RedisTarget) -> Iterator[tuple[Any, str, str]]:
    """A backend on a stream of its own, the camera whose shard the drills kill, and that shard's key."""
    stream = f"bench_failover_{uuid.uuid4().hex[:8]}"
    settings = QueueSettings(stream=stream, max_lag=1_000_000_000)  # no group: nothing to wait for
    queue = open_queue("redis", redis_url=target.url, settings=settings, codec=FrameCodec(checksum="none"),
                       redis_options=target.options())
    camera = "cam0"
    layout = ShardLayout(stream, target.shards, cluster=True)
    key = layout.shard_keys()[layout.shard_of(camera)][0]
    try:
        yield queue, camera, key
    finally:
        queue.close()
        with contextlib.suppress(redis.RedisError):
            target.delete(stream)


def _master_of(target: RedisTarget, key: str) -> Node:
    client = target.client()
    try:
        node = client.get_node_from_key(key)
        return _node(node.host, node.port)
    finally:
        client.close()


def drill(target: RedisTarget, queue: Any, camera: str, key: str, expected_nodes: int) -> Drill:
    """SIGKILL the master of ``key``'s slot, publish to it until one is accepted, restart the victim, wait."""
    encoded = FrameCodec(checksum="none").encode(Frame(camera, 0, b"x" * 1024))
    queue.publish_encoded([(camera, encoded)])  # the backend knows the slot map before the kill
    victim = _master_of(target, key)
    attempts, errors = 0, []
    seconds: float | None = None
    killed = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    while True:
        try:
            queue.publish_encoded([(camera, encoded)])
            seconds = time.monotonic() - killed
            break
        except QueueError as exc:  # no breaker here: the backend's own recovery is what is timed
            attempts += 1
            kind = f"{type(exc).__name__}: {str(exc).split(':')[-1].strip()[:60]}"
            if kind not in errors:
                errors.append(kind)
            if time.monotonic() - killed > DRILL_TIMEOUT_S:  # a failed drill, shown as such; the next one runs
                seconds = None
                break
            time.sleep(RETRY_S)
    with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
        promoted = "?"
        promoted = _master_of(target, key).name
    _restart(victim)
    wait_whole(target, expected_nodes)
    return Drill(victim.name, promoted, None if seconds is None else round(seconds, 3), attempts, errors[:5])


def _gone(pid: int) -> bool:
    """The process has ended: no such process, or a zombie nobody reaped yet (a daemonized node's parent is
    the container's first process, which may not reap; a zombie holds no port)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def _restart(victim: Node) -> None:
    """Start a killed node from its config file (daemonized there), once its process is gone."""
    deadline = time.monotonic() + 10
    while not _gone(victim.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Redis reports a relative argv[0] joined to its working directory: fall back to the PATH's redis-server.
    executable = victim.executable if Path(victim.executable).exists() else shutil.which(Path(victim.executable).name)
    subprocess.run([executable or "redis-server", victim.config_file], check=True, capture_output=True, timeout=30,
                   stdin=subprocess.DEVNULL)


def failover_drills(target: RedisTarget, count: int) -> list[Drill]:
    """``count`` drills on ``target``, one after the other, the cluster whole before each."""
    client = target.client()
    try:
        expected = len(members(client))
    finally:
        client.close()
    wait_whole(target, expected)
    with _drill_queue(target) as (queue, camera, key):
        return [drill(target, queue, camera, key, expected) for _ in range(count)]


def drill_summary(target: RedisTarget, drills: list[Drill]) -> dict[str, Any]:
    """p50 and max over the drills that ended with an accepted publish; ``failed``: those that did not."""
    seconds = [d.seconds for d in drills if d.seconds is not None]
    return {"target": target.label, "masters": target.masters, "shards": target.shards,
            "p50_s": round(statistics.median(seconds), 3) if seconds else None,
            "max_s": max(seconds, default=None), "failed": len(drills) - len(seconds),
            "drills": [vars(d) for d in drills]}
