"""The six-node cluster fixture itself, with redis-py's ``RedisCluster``: it forms, spreads keys over three
masters, and fails over when a master is SIGKILLed. The cluster backend's tests stand on this."""

from __future__ import annotations

import uuid

import pytest
from redis.crc import key_slot

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
