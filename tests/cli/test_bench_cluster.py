"""``frame-buffer bench`` against Redis Clusters (issue 16): the cluster rows beside the standalone server in one
run, the servers' CPU, publish latency by replica acks, the failover drills, and what it refuses. Real servers:
clusters started by ``scripts/local-cluster.sh`` as the README tells a user to, on free ports. Structure and
audit are asserted, never speed.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from tests.cli.test_commands import last_json, run
from tests.cluster_servers import BUS_OFFSET, RedisClusterServers, port_is_free

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local-cluster.sh"
#: A bench as short as it goes: the figures mean nothing, the structure is what is checked.
QUICK = ("--scale", "0.02", "--repeat", "1", "--latency-seconds", "0.2", "--worker-processes", "1", "--json")


def _free_block(count: int) -> int:
    """A first port of ``count`` consecutive free ports whose cluster bus ports (+10000) are free too."""
    rng = random.Random()
    while True:
        base = rng.randrange(20000, 32768 - BUS_OFFSET - count)
        ports = [*range(base, base + count), *range(base + BUS_OFFSET, base + BUS_OFFSET + count)]
        if all(port_is_free(port) for port in ports):
            return base


def _script(*args: str) -> str:
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def three_masters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """3 masters x 1 replica started by the script; its seed URLs."""
    where = tmp_path_factory.mktemp("cluster3")
    seeds = _script("start", "--masters", "3", "--replicas", "1", "--port", str(_free_block(6)), "--dir", str(where))
    try:
        yield seeds
    finally:
        _script("stop", "--dir", str(where))


@pytest.fixture
def one_master(tmp_path: Path) -> Iterator[str]:
    """1 master, no replica, started by the script (one redis-server); its seed URL."""
    seeds = _script("start", "--masters", "1", "--replicas", "0", "--port", str(_free_block(1)), "--dir",
                    str(tmp_path / "c1"))
    try:
        yield seeds
    finally:
        _script("stop", "--dir", str(tmp_path / "c1"))


@pytest.mark.cluster
def test_a_cluster_beside_the_server_with_replica_acks_and_a_failover_drill(three_masters: str) -> None:
    result = run("bench", "--sizes", "100KB", *QUICK, "--cluster-url", three_masters, "--replica-acks", "0,1",
                 "--failover-drills", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = last_json(result.stdout)
    rows = data["rows"]
    assert [(r["backend"], r["masters"], r["shards"]) for r in rows] == [("redis", 1, 1), ("cluster-3m", 3, 16)]
    assert all(r["frames_per_s"] > 0 and r["baseline_frames_per_s"] > 0 and r["p99_ms"] > 0 for r in rows)
    cluster_row = rows[1]
    assert set(cluster_row["cpu"]) == {"masters", "busiest_master", "replicas"}
    assert cluster_row["cpu"]["masters"] >= cluster_row["cpu"]["busiest_master"] >= 0
    # WAIT 1 is measured on the cluster only: a standalone server has no replica to wait for.
    acks = {(row["target"], row["replica_acks"]): row for row in data["replica_acks"]}
    assert set(acks) == {("redis", 0), ("cluster-3m", 0), ("cluster-3m", 1)}
    assert all(row["publish_p99_ms"] > 0 and row["runs"] == 1 for row in acks.values())
    (failover,) = data["failover"]
    (drill,) = failover["drills"]
    assert failover["target"] == "cluster-3m" and failover["failed"] == 0
    assert drill["seconds"] > 0 and drill["killed"] != drill["promoted"]
    assert failover["p50_s"] == failover["max_s"] == drill["seconds"]
    # The standalone server's service path still runs, audited, beside the cluster.
    assert data["service_path"]["failed_audits"] == 0
    for title in ("redis servers in the best throughput run", "publish latency by replica acks",
                  "failover drills on cluster-3m"):
        assert title in result.stdout


@pytest.mark.cluster
def test_redis_mode_cluster_measures_the_cluster_alone_and_leaves_no_keys(three_masters: str) -> None:
    result = run("bench", "--sizes", "640x480x3", *QUICK, "--redis-mode", "cluster", "--redis-url", three_masters,
                 "--shards", "3", timeout=300)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = last_json(result.stdout)
    assert [(r["backend"], r["shards"]) for r in data["rows"]] == [("cluster-3m", 3)]
    assert data["service_path"] is None and data["replica_acks"] == [] and data["failover"] == []
    client = RedisCluster.from_url(three_masters.split(",", maxsplit=1)[0])
    try:
        left = [key for node in client.get_primaries()
                for key in client.get_redis_connection(node).keys("bench_*")]
    finally:
        client.close()
    assert left == []


def test_failover_drills_need_three_masters_and_are_refused_before_measuring(one_master: str) -> None:
    result = run("bench", "--cluster-url", one_master, "--failover-drills", "5")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--failover-drills: cluster-1m: a failover needs at least 3 masters" in lines[0]
    assert "frames/s" not in result.stdout


def test_a_cluster_node_given_as_a_standalone_server_is_refused(one_master: str) -> None:
    result = run("bench", "--redis-url", one_master)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"frame-buffer: configuration error: --redis-url: {one_master.removeprefix('redis://').removesuffix('/0')} "
        "is a Redis Cluster node: pass --redis-mode cluster, or give it as --cluster-url"]


@pytest.mark.cluster
def test_failover_drills_refuse_nodes_the_bench_could_not_restart(redis_cluster: RedisClusterServers) -> None:
    # The test fixture starts its nodes with command-line options, not a config file: SIGKILL yes, restart no.
    result = run("bench", "--cluster-url", redis_cluster.seed_urls, "--failover-drills", "1")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "--failover-drills: cluster-3m: node 127.0.0.1:" in line and "not started from a config file" in line
    assert all(node.process is not None for node in redis_cluster.nodes)  # nothing was killed


def test_the_script_refuses_a_second_cluster_in_one_directory_and_stop_deletes_it(tmp_path: Path) -> None:
    where = tmp_path / "c"
    seeds = _script("start", "--masters", "1", "--replicas", "0", "--port", str(_free_block(1)), "--dir", str(where))
    try:
        assert _script("seeds", "--dir", str(where)) == seeds
        again = subprocess.run(["bash", str(SCRIPT), "start", "--masters", "1", "--replicas", "0", "--dir", str(where)],
                               capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert again.returncode == 1 and "already holds a cluster" in again.stderr
    finally:
        _script("stop", "--dir", str(where))
    assert not where.exists()
    with redis.Redis.from_url(seeds) as gone, pytest.raises(redis.ConnectionError):
        gone.ping()
