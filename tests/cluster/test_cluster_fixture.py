"""The six-node cluster fixture itself, with redis-py's ``RedisCluster``: it forms, spreads keys over three
masters, and fails over when a master is SIGKILLed. The cluster backend's tests stand on this."""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, CrossSlotTransactionError

from tests.cluster_servers import RedisClusterServers

pytestmark = pytest.mark.cluster


def test_the_cluster_has_three_masters_each_with_a_replica_in_sync(redis_cluster: RedisClusterServers) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    replicas = {redis_cluster.replica_of(master).port for master in masters}
    assert len(replicas) == 3 and not replicas & {master.port for master in masters}


def test_a_sigkilled_master_is_replaced_by_its_replica_and_writes_go_on(redis_cluster: RedisClusterServers) -> None:
    prefix = f"test_{uuid.uuid4().hex[:12]}:"
    keys = dict(redis_cluster.keys_on_every_master(prefix))
    assert len({master.port for master in keys.values()}) == 3  # one key on each master
    client = redis_cluster.client()
    try:
        for key in keys:
            client.xadd(key, {"n": "0"})
        victim_key, victim = next(iter(keys.items()))
        replica = redis_cluster.replica_of(victim)
        redis_cluster.wait_replicated(victim)  # the entry is on the replica: the failover cannot lose it
        redis_cluster.kill(victim)
        promoted = redis_cluster.wait_for_failover(victim, key_slot(victim_key.encode()))
        assert promoted.port == replica.port
        for key in keys:  # the client finds the promoted replica by itself (refreshes its slot map)
            client.xadd(key, {"n": "1"})
        assert {key: client.xlen(key) for key in keys} == dict.fromkeys(keys, 2)
        assert redis_cluster.master_of_key(victim_key).port == replica.port
        client.delete(*keys)  # several slots: redis-py splits a multi-key DEL by slot
    finally:
        client.close()


def test_a_killed_master_restarted_in_place_rejoins_as_a_replica(redis_cluster: RedisClusterServers) -> None:
    victim = redis_cluster.masters()[0]
    slot = next(view.slots[0][0] for view in redis_cluster.view(victim) if view.port == victim.port)
    redis_cluster.kill(victim)
    promoted = redis_cluster.wait_for_failover(victim, slot)
    redis_cluster.restart(victim)
    assert victim.port not in {master.port for master in redis_cluster.masters()}
    assert redis_cluster.replica_of(promoted).port == victim.port


# -- what the design rests on (docs/scaling.md), checked on the real cluster ------------------------------------
def test_keys_of_two_slots_cannot_share_a_transaction_or_a_blocking_read(redis_cluster: RedisClusterServers) -> None:
    """Why a shard keeps its dead letters in its own slot, and why one blocking read covers one shard: the
    server answers CROSSSLOT even when one node serves both slots, and redis-py refuses the transaction first."""
    prefix = f"test_{uuid.uuid4().hex[:12]}"
    master = redis_cluster.masters()[0]
    ranges = next(view.slots for view in redis_cluster.view(master) if view.port == master.port)
    mine = [key for key in (f"{prefix}:{{{n}}}" for n in range(200))
            if any(low <= key_slot(key.encode()) <= high for low, high in ranges)][:2]  # two slots of one node
    assert key_slot(mine[0].encode()) != key_slot(mine[1].encode())
    node = master.client()
    client = redis_cluster.client()
    try:
        with pytest.raises(ClusterCrossSlotError, match="don't hash to the same slot"):  # the CROSSSLOT reply
            node.execute_command("XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", *mine, ">", ">")
        pipe = client.pipeline(transaction=True)
        pipe.xadd(mine[0], {"h": "x"})
        pipe.xadd(mine[1], {"h": "y"})
        with pytest.raises(CrossSlotTransactionError):
            pipe.execute()
        assert client.exists(*mine) == 0  # nothing of the refused transaction was written
    finally:
        node.close()
        client.close()


def test_wait_counts_the_replicas_that_have_a_connections_writes(redis_cluster: RedisClusterServers) -> None:
    """The base of FRAME_BUFFER_REDIS_REPLICA_ACKS: WAIT on the connection that wrote says how many replicas
    have it; with the replica gone it says 0 when its timeout ends, a shortfall the publisher can see."""
    key = f"test_{uuid.uuid4().hex[:12]}:{{0}}"
    master = redis_cluster.master_of_key(key)
    node = master.client()
    try:
        pipe = node.pipeline(transaction=False)  # one connection for the write and its WAIT
        pipe.xadd(key, {"h": "x"})
        pipe.execute_command("WAIT", 1, 5000)
        assert pipe.execute()[1] == 1
        redis_cluster.kill(redis_cluster.replica_of(master))
        pipe.xadd(key, {"h": "y"})
        pipe.execute_command("WAIT", 1, 200)
        assert pipe.execute()[1] == 0
        node.delete(key)
    finally:
        node.close()
