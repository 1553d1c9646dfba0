"""The Redis targets of ``frame-buffer bench``: the standalone server and any Redis Clusters beside it, what each
server spends of its CPU during a run, and the failover drills.

Every Redis target is measured in the same run, alternated within each repeat, so that a noisy minute of this
shared machine hits them alike (docs/scaling.md compares only figures of one run). A cluster's label says how
many masters serve its slots (``cluster-3m``), read from the cluster itself rather than trusted from the user.

**Server CPU.** On 2 cores a throughput figure alone cannot say whether Redis or the client was the limit. Each
throughput run reads ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``) of every node before and after, so the
table can say how busy the masters were and what one master would take at 100 % of a core (the per-master
ceiling: frames per second divided by the masters' summed CPU share), which is the figure to project N hosts from.

**Failover drills** SIGKILL the master of one shard and time the first publish that is accepted again, through
:meth:`ShardedStreamsQueue.publish_encoded` retried every 10 ms with no breaker (the service's breaker would add
its own open interval: this is the backend's part). The victim is then restarted from its config file and the
bench waits until the cluster is whole before the next drill. So the nodes must run on this machine, as this
user, from a config file: ``scripts/local-cluster.sh start`` starts them so; anything else is refused before
the run starts (exit 2).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from frame_buffer.checks import masked_url
from frame_buffer.config import ConfigError
from frame_buffer.queue import BackendRefused, BackendUnavailable, RedisOptions
from frame_buffer.queue.redis_streams.clients import cluster_client
from frame_buffer.queue.redis_streams.shards import ShardLayout


@dataclass(frozen=True)
class RedisTarget:
    """One Redis deployment the bench measures: a standalone server, or a cluster and how it is laid out.

    Args:
        url: the server, or the cluster's comma-separated seed URLs.
        cluster: a Redis Cluster.
        shards: shard streams of the backend on it (the backend's default: 1 standalone, 16 cluster).
        masters: masters serving slots (1 for a standalone server).
    """

    url: str
    cluster: bool
    shards: int
    masters: int

    @property
    def label(self) -> str:
        """``redis`` or ``cluster-<masters>m``: the table's backend column."""
        return f"cluster-{self.masters}m" if self.cluster else "redis"

    def options(self, replica_acks: int = 0) -> RedisOptions:
        return RedisOptions("cluster" if self.cluster else "standalone", self.shards, replica_acks)

    def client(self) -> Any:
        """A client of the whole target: ``redis.Redis`` or ``RedisCluster`` (its first seed that answers)."""
        if self.cluster:
            return cluster_client(self.url.split(","), 1000, 5.0)
        return redis.Redis.from_url(self.url, socket_timeout=10)

    def delete(self, stream: str) -> None:
        """Delete every key a backend on ``stream`` made: its shard streams and their dead letters."""
        client = self.client()
        try:
            for keys in ShardLayout(stream, self.shards, self.cluster).shard_keys():
                for key in keys:  # one key per call: the keys of two shards are in two slots
                    client.delete(key)
        finally:
            client.close()


def connect(url: str, cluster: bool, shards: int, flag: str) -> RedisTarget:
    """Ask the server what it is: a cluster's masters are counted; a standalone server given as a cluster, or a
    cluster node given as a standalone server, is refused naming ``flag`` (exit 2); a server that does not answer
    is exit 3 (the backend's own errors)."""
    if cluster:
        try:
            client = cluster_client(url.split(","), 1000, 5.0)
        except BackendRefused as exc:
            if "is not a Redis Cluster node" not in str(exc):
                raise
            raise ConfigError(f"{flag}: {masked_url(url)} is not a Redis Cluster node: give cluster nodes, or measure "
                              "it as a standalone server (--redis-url without --redis-mode cluster)") from None
        try:
            masters = len(client.get_primaries())
        finally:
            client.close()
        return RedisTarget(url, True, shards, masters)
    client = redis.Redis.from_url(url, socket_timeout=10)
    parts = urllib.parse.urlsplit(url)
    address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    try:
        enabled = int(client.info("cluster").get("cluster_enabled", 0))
    except redis.ConnectionError as exc:
        raise BackendUnavailable(f"redis at {address} unavailable: {exc}") from None
    finally:
        client.close()
    if enabled:
        raise ConfigError(f"{flag}: {address} is a Redis Cluster node: pass --redis-mode cluster, or give it as "
                          "--cluster-url")
    return RedisTarget(url, False, 1, 1)


@dataclass(frozen=True)
class Member:
    """A node of a cluster as ``CLUSTER NODES`` lists it (redis-py's slot map holds the masters only)."""

    host: str
    port: int
    master: bool

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def members(client: Any) -> list[Member]:
    """Every node of the cluster ``client`` (a ``RedisCluster``) is connected to, replicas included."""
    primary = client.get_primaries()[0]
    nodes: dict[str, dict[str, Any]] = client.get_redis_connection(primary).execute_command("CLUSTER NODES")
    found = []
    for address, fields in nodes.items():
        if any(flag in str(fields["flags"]) for flag in ("fail", "handshake", "noaddr")):
            continue
        host, _, port = address.rpartition(":")
        found.append(Member(host, int(port.partition("@")[0]), "master" in str(fields["flags"])))
    return found


# -- server CPU ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeCpu:
    """CPU seconds a node has used so far, and whether it serves slots."""

    name: str
    master: bool
    seconds: float


def cpu_now(target: RedisTarget) -> list[NodeCpu]:
    """``INFO cpu`` of every node of ``target`` (a standalone server: itself, as a master)."""
    client = target.client()
    try:
        if not target.cluster:
            info = client.info("cpu")
            return [NodeCpu("server", True, float(info["used_cpu_sys"]) + float(info["used_cpu_user"]))]
        nodes = []
        for member in members(client):
            with redis.Redis(host=member.host, port=member.port, socket_timeout=5) as node:
                info = node.info("cpu")
            seconds = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
            nodes.append(NodeCpu(member.name, member.master, seconds))
        return nodes
    finally:
        client.close()


@dataclass
class CpuShare:
    """What the servers of a target spent during a run, as a share of one core."""

    masters: float = 0.0  # summed over the masters
    busiest_master: float = 0.0
    replicas: float = 0.0  # summed over the replicas

    @classmethod
    def between(cls, before: list[NodeCpu], after: list[NodeCpu], seconds: float) -> CpuShare:
        used = {node.name: node.seconds for node in before}
        masters = [(node.seconds - used.get(node.name, node.seconds)) / seconds for node in after if node.master]
        replicas = [(node.seconds - used.get(node.name, node.seconds)) / seconds for node in after if not node.master]
        return cls(round(sum(masters), 3), round(max(masters, default=0.0), 3), round(sum(replicas), 3))


def timed_with_cpu(target: RedisTarget, run: Callable[[], float]) -> tuple[float, CpuShare]:
    """``run()``'s seconds, and what the target's servers spent meanwhile."""
    before = cpu_now(target)
    seconds = run()
    return seconds, CpuShare.between(before, cpu_now(target), seconds)
