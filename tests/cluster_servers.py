"""A six-node Redis Cluster of our own (3 masters, 3 replicas) on loopback ports, for the cluster tests.

Each node is a :class:`~tests.servers.RedisServer` in its own directory (AOF ``appendfsync everysec``, as a
deployment would run it; ``nodes.conf`` there too, so a killed node restarted in place rejoins the cluster).
``cluster-node-timeout`` is short (1000 ms) so that a failover takes seconds, not the default 15 s. The
machine's shared Redis on 6379 is never touched.

Every wait polls with a deadline (``tests.servers.wait_until``): no bare sleeps.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from tests.servers import RedisServer, wait_until

#: A node is marked failing after this long without an answer; the failover follows within about a second.
NODE_TIMEOUT_MS = 1000
#: How long a cluster may take to form, or to heal after a failover or a restart.
SETTLE_S = 30.0
#: The cluster bus of a node listens on its port + 10000.
BUS_OFFSET = 10000


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of the loopback address (a bind succeeds)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` distinct ports, each free together with its cluster bus port (port + 10000).

    Both stay below Linux's default range of ephemeral ports (32768 and up), so an outgoing connection of
    another test cannot take a bus port between this check and the node's start."""
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randrange(20000, 32768 - BUS_OFFSET)
        if port not in ports and port_is_free(port) and port_is_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES`` as one node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None  # the master a replica follows
    slots: tuple[tuple[int, int], ...]  # inclusive ranges a master serves

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})


def parse_cluster_nodes(reply: dict[str, dict[str, object]]) -> list[NodeView]:
    """``CLUSTER NODES`` as redis-py parses it (address -> fields) as :class:`NodeView` rows."""
    views = []
    for address, fields in reply.items():
        ranges = [(int(pair[0]), int(pair[-1])) for pair in fields["slots"]]  # type: ignore[attr-defined]
        master = str(fields["master_id"])
        views.append(NodeView(str(fields["node_id"]), int(address.rpartition(":")[2]),
                              frozenset(str(fields["flags"]).split(",")), None if master == "-" else master,
                              tuple(ranges)))
    return views


class RedisClusterServers:
    """Six redis-server processes formed into a cluster with ``redis-cli --cluster create``.

    :meth:`start` returns once every node says ``cluster_state:ok`` and every replica is in sync;
    :meth:`stop` kills every process, whatever state the cluster is in.
    """

    def __init__(self, workdir: Path, masters: int = 3, replicas_per_master: int = 1, *,
                 node_extra: Sequence[str] = (), username: str | None = None, password: str | None = None) -> None:
        """``node_extra``: further redis-server arguments of every node (e.g. ``--aclfile``); ``username`` and
        ``password``: the user this class and ``redis-cli --cluster create`` log in as (an ACL user of that file,
        with ``--masteruser``/``--masterauth`` in ``node_extra`` so that replicas can log in to their masters)."""
        self.workdir = workdir
        count = masters * (1 + replicas_per_master)
        self.replicas_per_master = replicas_per_master
        self.username, self.password = username, password
        extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendfsync", "everysec",
                 # a replica (re)joining syncs at once rather than after the default 5 s wait for more replicas
                 "--repl-diskless-sync-delay", "0", *node_extra)
        self.nodes = [RedisServer(workdir / f"node-{port}", *extra, port=port, username=username, password=password)
                      for port in free_cluster_ports(count)]

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> RedisClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            login = ["--user", self.username] if self.username else []
            env = {**os.environ, "REDISCLI_AUTH": self.password} if self.password is not None else None
            subprocess.run(["redis-cli", *login, "--cluster", "create", *addresses, "--cluster-replicas",
                            str(self.replicas_per_master), "--cluster-yes"],
                           check=True, capture_output=True, timeout=SETTLE_S, stdin=subprocess.DEVNULL, env=env)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every node: the cluster's data is thrown away with its directory."""
        for node in self.nodes:
            node.kill()

    def alive(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node: no shutdown, no final fsync."""
        node.kill()

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again in its own directory (its ``nodes.conf`` and AOF) and wait until the
        cluster is whole again: a former master rejoins as a replica of the node promoted in its place."""
        node.start()
        self.wait_healthy()

    def ensure_healthy(self) -> None:
        """Restart every killed node and wait until the cluster is whole: what the next test starts from."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        self.wait_healthy()

    # -- what the cluster looks like ---------------------------------------------------------------------------
    def view(self, node: RedisServer) -> list[NodeView]:
        """The cluster as ``node`` sees it."""
        with node.client() as client:
            return parse_cluster_nodes(client.execute_command("CLUSTER NODES"))

    def masters(self) -> list[RedisServer]:
        """The nodes serving slots, as the first live node sees it."""
        by_port = {node.port: node for node in self.nodes}
        return [by_port[v.port] for v in self.view(self.alive()[0]) if v.is_master and v.slots and not v.failing]

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node serving ``slot``, as the first live node sees it."""
        by_port = {node.port: node for node in self.nodes}
        for view in self.view(self.alive()[0]):
            if view.is_master and not view.failing and any(low <= slot <= high for low, high in view.slots):
                return by_port[view.port]
        raise LookupError(f"no live master serves slot {slot}")

    def master_of_key(self, key: str) -> RedisServer:
        return self.master_of_slot(key_slot(key.encode()))

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A replica following ``master``."""
        views = self.view(master)
        mine = next(v.node_id for v in views if v.port == master.port)
        by_port = {node.port: node for node in self.nodes}
        return next(by_port[v.port] for v in views if v.master_id == mine and not v.failing)

    # -- waiting -----------------------------------------------------------------------------------------------
    def wait_replicated(self, master: RedisServer, timeout: float = SETTLE_S) -> None:
        """Wait until every replica of ``master`` has everything ``master`` has written so far (its replication
        offset): then a failover cannot lose those writes. (The publisher's way is ``WAIT``; this is the test's.)"""
        with master.client() as client:
            offset = int(client.info("replication")["master_repl_offset"])

        def caught_up() -> bool:
            with master.client() as client:
                info = client.info("replication")
            followers = [info[f"slave{i}"] for i in range(int(info["connected_slaves"]))]
            return len(followers) == self.replicas_per_master and all(
                int(f["offset"]) >= offset for f in followers)

        wait_until(caught_up, timeout, f"the replicas of port {master.port} to reach offset {offset}")

    def _healthy(self) -> bool:
        """Every node up, ``cluster_state:ok`` everywhere, all nodes known and not failing, every replica in sync."""
        if len(self.alive()) != len(self.nodes):
            return False
        for node in self.nodes:
            with node.client() as client:
                info = _cluster_info(client)
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                    return False
                views = self.view(node)
                if any(v.failing for v in views) or sum(1 for v in views if v.is_master) * (
                        1 + self.replicas_per_master) != len(self.nodes):
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and (replication.get("master_link_status") != "up"
                                                       or replication.get("master_sync_in_progress")):
                    return False
        return True

    def wait_healthy(self, timeout: float = SETTLE_S) -> None:
        wait_until(self._healthy, timeout, "the cluster to be whole (state ok, replicas in sync)", interval=0.05)

    def wait_for_failover(self, dead: RedisServer, slot: int, timeout: float = SETTLE_S) -> RedisServer:
        """Wait until every live node sees ``slot`` (which ``dead`` served) on another live master and says
        ``cluster_state:ok``; return that master (the promoted replica)."""
        by_port = {node.port: node for node in self.nodes}
        promoted: list[RedisServer] = []

        def settled() -> bool:
            owners = set()
            for node in self.alive():
                with node.client() as client:
                    if _cluster_info(client).get("cluster_state") != "ok":
                        return False
                owners |= {v.port for v in self.view(node) if v.is_master and not v.failing
                           and any(low <= slot <= high for low, high in v.slots)}
            if len(owners) != 1 or dead.port in owners:
                return False
            promoted[:] = [by_port[owners.pop()]]
            return True

        wait_until(settled, timeout, f"slot {slot} to fail over from port {dead.port}", interval=0.05)
        return promoted[0]

    # -- clients -------------------------------------------------------------------------------------------------
    @property
    def seed_urls(self) -> str:
        """Every node as a comma-separated list of ``redis://`` URLs (``FRAME_BUFFER_REDIS_URL`` in cluster mode)."""
        return ",".join(f"redis://127.0.0.1:{node.port}/0" for node in self.nodes)

    def client(self) -> RedisCluster:
        """A redis-py cluster client seeded with every node."""
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.nodes],
                            socket_timeout=5, socket_connect_timeout=2, username=self.username,
                            password=self.password)

    def keys_on_every_master(self, prefix: str) -> Iterator[tuple[str, RedisServer]]:
        """One key per master (``<prefix>{<n>}`` for the first tags that land on it), with its master."""
        found: dict[int, str] = {}
        masters = self.masters()
        tag = 0
        while len(found) < len(masters):
            key = f"{prefix}{{{tag}}}"
            owner = self.master_of_key(key)
            found.setdefault(owner.port, key)
            tag += 1
        by_port = {node.port: node for node in self.nodes}
        for port, key in found.items():
            yield key, by_port[port]


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as redis-py parses it."""
    return {str(key): str(value) for key, value in client.execute_command("CLUSTER INFO").items()}
