"""The redis backend in cluster mode against real clusters: what the conformance suite (which runs on the
six-node cluster too) does not reach. Seeds that refuse or do not answer, a slot nobody serves, replica
acknowledgements (``WAIT``) and ``min-replicas-to-write``, a stale slot map."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from frame_buffer.queue import BackendRefused, BackendUnavailable, QueueSettings
from frame_buffer.queue.redis_streams import ReplicaShortfall, ShardedStreamsQueue
from tests.cluster_servers import RedisClusterServers, free_cluster_ports
from tests.conftest import REDIS_URL
from tests.frames import make_frames
from tests.servers import RedisServer, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def one_node_cluster(tmp_path: Path) -> Iterator[RedisServer]:
    """A cluster of one password-protected master serving every slot: cheap to break on purpose."""
    (port,) = free_cluster_ports(1)  # its bus port (+10000) free and under 65536 too
    server = RedisServer(tmp_path / "node", "--cluster-enabled", "yes", port=port, password="secret").start()
    client = server.client()
    client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_until(lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"), 30, "a one-node cluster")
    client.close()
    yield server
    server.stop()


def _open(url: str, **kwargs: object) -> ShardedStreamsQueue:
    return ShardedStreamsQueue(url, QueueSettings(stream=f"test_{uuid.uuid4().hex[:12]}", groups=("g",)),
                               shards=4, cluster=True, **kwargs)  # type: ignore[arg-type]


def test_seeds_that_refuse_or_are_not_a_cluster_are_a_wrong_setting(one_node_cluster: RedisServer) -> None:
    port = one_node_cluster.port
    with pytest.raises(BackendRefused, match=f"redis at 127.0.0.1:{port} refused redis://:\\*\\*\\*@"):
        _open(one_node_cluster.url.replace("secret", "wrong"))
    with pytest.raises(BackendRefused, match="Authentication required"):
        _open(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(BackendRefused, match=r"127\.0\.0\.1:6379 .* is not a Redis Cluster node"):
        _open(REDIS_URL)


def test_the_first_seed_that_answers_is_used_and_none_answering_names_each(one_node_cluster: RedisServer) -> None:
    with _open(f"redis://:secret@127.0.0.1:1/0,{one_node_cluster.url}") as queue:
        queue.publish_many(make_frames(3))
        assert queue.stats("g").lag == 3
    with pytest.raises(BackendUnavailable, match=r"no seed answered: 127\.0\.0\.1:1: .*; 127\.0\.0\.1:2: "):
        _open("redis://127.0.0.1:1/0,redis://127.0.0.1:2/0")


def test_a_slot_nobody_serves_or_a_dead_node_is_an_outage_never_a_crash(one_node_cluster: RedisServer) -> None:
    admin = one_node_cluster.client()
    queue = _open(one_node_cluster.url)
    queue.publish_many(make_frames(1))
    slot = queue.layout.slot(queue.layout.shard_of("cam0"))
    admin.execute_command("CLUSTER", "DELSLOTS", slot)
    with pytest.raises(BackendUnavailable, match="CLUSTERDOWN"):
        queue.publish_many(make_frames(1))
    with pytest.raises(BackendUnavailable, match="CLUSTERDOWN"):
        queue.stats("g")
    with pytest.raises(BackendUnavailable, match="not covered"):
        queue.consume("g", "c", block_ms=100)
    admin.execute_command("CLUSTER", "ADDSLOTS", slot)
    wait_until(lambda: b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"), 30, "the slot served again")
    queue.routing.refresh()
    queue.publish_many(make_frames(1))
    assert queue.stats("g").lag == 2
    admin.close()
    one_node_cluster.kill()
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{one_node_cluster.port}"):
        queue.publish_many(make_frames(1))  # the refresh after the failure finds no node either: still an outage
    queue.close()


def test_replica_acks_wait_for_the_replica_and_a_shortfall_fails_the_publish(
        redis_cluster: RedisClusterServers) -> None:
    with _open(redis_cluster.seed_urls, replica_acks=1, replica_timeout_ms=5000) as queue:
        assert len(queue.publish_many(make_frames(5, cameras=5))) == 5  # every master has its one replica
        assert queue.used_memory_bytes() > 3 * 1024 * 1024  # every master's, summed
    with _open(redis_cluster.seed_urls, replica_acks=2, replica_timeout_ms=20) as queue:
        with pytest.raises(ReplicaShortfall, match=r"redis at 127\.0\.0\.1:\d+: 1 of 2 replica\(s\) acknowledged"):
            queue.publish_many(make_frames(1))
        assert queue.stats("g").lag == 1  # written on the master all the same: a retry is a duplicate, not a loss


def test_a_master_refusing_writes_without_enough_replicas_is_an_outage(redis_cluster: RedisClusterServers) -> None:
    with _open(redis_cluster.seed_urls) as queue:
        master = redis_cluster.master_of_slot(queue.layout.slot(queue.layout.shard_of("cam0")))
        admin = redis.Redis(port=master.port)
        admin.config_set("min-replicas-to-write", 2)
        try:
            with pytest.raises(BackendUnavailable, match="NOREPLICAS"):
                queue.publish_many(make_frames(1))
        finally:
            admin.config_set("min-replicas-to-write", 0)
            admin.close()
        queue.publish_many(make_frames(1))


def test_a_stale_slot_map_is_read_again_at_the_first_moved(redis_cluster: RedisClusterServers) -> None:
    with _open(redis_cluster.seed_urls) as queue:
        shard = queue.layout.shard_of("cam0")
        slot = queue.layout.slot(shard)
        nodes = queue.client.nodes_manager
        right = nodes.slots_cache[slot][0]
        wrong = next(node for node in queue.client.get_primaries() if node.name != right.name)
        nodes.slots_cache[slot] = [wrong]  # as after a failover or resharding nobody told this client about
        (entry_id,) = queue.publish_many(make_frames(1))
        assert nodes.slots_cache[slot][0].name == right.name
        assert entry_id.startswith(f"{shard}/")
        assert queue.stats("g").lag == 1
