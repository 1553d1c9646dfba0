"""The fault tests of issue 16 on real Redis Cluster nodes, under load (4 cameras, 1000 frames/s in total).

Each test starts a cluster of its own (it kills, restarts or reshards nodes, and sets ``min-replicas-to-write``),
publishes through the real Producer with ``REPLICA_ACKS=1`` and consumes in worker processes, then prints
published / consumed / lost / duplicates / redelivered and asserts that nothing accepted was lost. Every step
waits on a condition with a deadline; no assert is about time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.load import LAYOUT, LoadRun, in_order_apart_from_redeliveries, slot_of, start_cluster
from tests.cluster_servers import RedisClusterServers
from tests.servers import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

StartCluster = Callable[..., RedisClusterServers]


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[StartCluster]:
    """Starts clusters of this test's own (:func:`tests.cluster.load.start_cluster`); all killed afterwards."""
    started: list[RedisClusterServers] = []

    def start(**options: int) -> RedisClusterServers:
        started.append(start_cluster(tmp_path / f"cluster-{len(started)}", **options))
        return started[-1]

    yield start
    for cluster in started:
        cluster.stop()


def role(node_port: int, cluster: RedisClusterServers) -> str:
    node = next(n for n in cluster.nodes if n.port == node_port)
    with node.client() as client:
        return str(client.info("replication")["role"])


def test_1_master_sigkilled_under_load_its_replica_takes_over(own_cluster: StartCluster, tmp_path: Path) -> None:
    """Two replicas per master: the promoted one keeps a replica, so with min-replicas-to-write 1 publishing
    resumes by itself while the killed master stays dead."""
    cluster = own_cluster(replicas_per_master=2)
    run = LoadRun(cluster, tmp_path)
    run.wait_consumed(500, "frames flowing before the kill")
    slot = slot_of(run.names[0])
    victim = cluster.master_of_slot(slot)
    cluster.kill(victim)
    promoted = cluster.wait_for_failover(victim, slot)
    run.wait_published_more(1000, "publishing resumed on the promoted replica, spool empty")
    assert victim.process is None, "the killed master is still dead"
    counts = run.finish("master SIGKILL", victim=victim.port, promoted=promoted.port)
    assert counts["lost"] == 0 and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert counts["consumed"] == counts["submitted"]
    assert in_order_apart_from_redeliveries(run.deliveries())


def test_2_replica_sigkilled_under_load(own_cluster: StartCluster, tmp_path: Path) -> None:
    """REPLICA_ACKS=1 and min-replicas-to-write 1: the master sees its only replica's connection close and
    refuses writes at once (NOREPLICAS; a WAIT shortfall would follow if it had not, and be retried as a
    duplicate). Every camera's frames wait in the spool (one publisher, one FIFO spool) and the worker, whose
    reads are writes too, stops on every shard until the replica is back; then everything flows. 0 lost."""
    cluster = own_cluster()
    run = LoadRun(cluster, tmp_path)
    run.wait_consumed(500, "frames flowing before the kill")
    master = cluster.master_of_slot(slot_of(run.names[0]))
    replica = cluster.replica_of(master)
    cluster.kill(replica)
    wait_until(lambda: run.producer.summary()["spool_frames"] > 0, 60, "publishes to the master to fail and spool")
    during = run.producer.summary()
    cluster.restart(replica)  # waits until the cluster is whole, the replica in sync
    assert role(replica.port, cluster) == "slave"
    run.wait_published_more(1000, "publishing resumed once the replica is back")
    counts = run.finish("replica SIGKILL", spool_at_outage=during["spool_frames"])
    assert counts["lost"] == 0 and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert counts["publish_failures"] > 0 and counts["spooled"] > 0 and counts["replayed"] >= counts["spooled"]
    assert in_order_apart_from_redeliveries(run.deliveries())


def test_2b_replica_sigkilled_without_replica_acks_changes_nothing(own_cluster: StartCluster, tmp_path: Path) -> None:
    """REPLICA_ACKS=0 and no min-replicas-to-write: a replica's death does not touch the publish or the delivery
    path at all."""
    cluster = own_cluster(min_replicas=0)
    run = LoadRun(cluster, tmp_path, replica_acks=0)
    run.wait_consumed(500, "frames flowing before the kill")
    master = cluster.master_of_slot(slot_of(run.names[0]))
    replica = cluster.replica_of(master)
    cluster.kill(replica)
    run.wait_published_more(1000, "publishing with the replica dead")
    counts = run.finish("replica SIGKILL, acks 0")
    assert counts["lost"] == counts["dropped"] == counts["dead_lettered"] == 0
    assert counts["publish_failures"] == 0 and counts["spooled"] == 0 and counts["duplicates"] == 0
    assert counts["redelivered"] == 0
    assert in_order_apart_from_redeliveries(run.deliveries())


def test_3_master_killed_and_restarted_rejoins_as_replica(own_cluster: StartCluster, tmp_path: Path) -> None:
    """One replica per master: the promoted replica has none left, so min-replicas-to-write 1 refuses its writes
    until the killed master, restarted in place, rejoins as its replica; then everything spooled flows."""
    cluster = own_cluster()
    run = LoadRun(cluster, tmp_path)
    run.wait_consumed(500, "frames flowing before the kill")
    slot = slot_of(run.names[0])
    victim = cluster.master_of_slot(slot)
    cluster.kill(victim)
    promoted = cluster.wait_for_failover(victim, slot)
    cluster.restart(victim)
    assert role(victim.port, cluster) == "slave" and cluster.replica_of(promoted).port == victim.port
    run.wait_published_more(1000, "publishing resumed once the old master is a replica")
    counts = run.finish("master SIGKILL + restart", victim=victim.port, promoted=promoted.port)
    assert counts["lost"] == 0 and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert in_order_apart_from_redeliveries(run.deliveries())


def test_4_resharding_under_load_moves_a_shard_and_keeps_order(own_cluster: StartCluster, tmp_path: Path) -> None:
    """``redis-cli --cluster reshard`` moves the lowest slots of shard 0's master, up to and including shard 0's
    slot (the only one of them holding a key), to another master while frames flow."""
    cluster = own_cluster()
    run = LoadRun(cluster, tmp_path)
    run.wait_consumed(500, "frames flowing before the resharding")
    slot = slot_of(run.names[0])
    source = cluster.master_of_slot(slot)
    target = next(master for master in cluster.masters() if master.port != source.port)
    ids = {view.port: view.node_id for view in cluster.view(source)}
    low = min(low for view in cluster.view(source) if view.port == source.port for low, _ in view.slots)
    subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source.port}", "--cluster-from",
                    ids[source.port], "--cluster-to", ids[target.port], "--cluster-slots", str(slot - low + 1),
                    "--cluster-yes"], check=True, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    wait_until(lambda: cluster.master_of_slot(slot).port == target.port, 60, "every node to see the slot moved")
    run.wait_published_more(1000, "publishing to the shard on its new master")
    counts = run.finish("resharding", moved_slots=slot - low + 1, shard_slot=slot)
    assert counts["lost"] == 0 and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert in_order_apart_from_redeliveries(run.deliveries())


def test_5_consumer_sigkilled_during_a_failover(own_cluster: StartCluster, tmp_path: Path) -> None:
    """Consumer a hangs holding entries, its shard's master is SIGKILLed and a is SIGKILLed before the failover
    completes; consumer b reclaims a's pending entries (XAUTOCLAIM on every shard) and nothing is lost."""
    cluster = own_cluster()
    run = LoadRun(cluster, tmp_path, consumers=("a", "b"), consumer_args=("--claim-ms", "1000"),
                  hang={"a": 300})
    doomed = run.consumers["a"]
    wait_until(lambda: len(doomed.delivered()) >= 300 and run.pending_of("a"), 60, "consumer a holding frames")
    orphaned = run.pending_of("a")
    shard = next(iter(orphaned))
    slot = LAYOUT.slot(shard)
    victim = cluster.master_of_slot(slot)
    cluster.kill(victim)
    doomed.kill()
    promoted = cluster.wait_for_failover(victim, slot)
    cluster.restart(victim)  # one replica per master: the promoted one writes again once it has a replica
    run.wait_published_more(1000, "publishing resumed after the failover")
    counts = run.finish("consumer SIGKILL during failover", killed_consumers=("a",),
                        orphaned_pending=sum(orphaned.values()), orphaned_shards=len(orphaned),
                        handled_by_a=len(doomed.delivered()), handled_by_b=len(run.consumers["b"].delivered()),
                        victim=victim.port, promoted=promoted.port)
    assert counts["lost"] == 0 and counts["dropped"] == 0 and counts["dead_lettered"] == 0
    assert run.pending_of("a") == {}, "nothing left pending under the dead consumer, on any shard"
    assert counts["redelivered"] > 0
