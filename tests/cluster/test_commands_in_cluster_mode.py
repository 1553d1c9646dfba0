"""The commands in cluster mode, as a user runs them (FRAME_BUFFER_REDIS_MODE=cluster, seeds in
FRAME_BUFFER_REDIS_URL) on the six-node test cluster: loadgen into consume, a malformed entry through the dead
letters and back, the demo deleting only what it made."""

from __future__ import annotations

import json

import pytest
from redis.cluster import RedisCluster

from frame_buffer.queue.redis_streams.shards import ShardLayout
from tests.cli.test_commands import last_json, run
from tests.cluster_servers import RedisClusterServers

pytestmark = pytest.mark.cluster
SHARDS = 6


def _env(cluster: RedisClusterServers) -> dict[str, str]:
    return {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": cluster.seed_urls,
            "FRAME_BUFFER_SHARDS": str(SHARDS)}


def _keys(stream: str) -> list[str]:
    return [key for keys in ShardLayout(stream, SHARDS, cluster=True).shard_keys() for key in keys]


def test_loadgen_consume_and_the_dead_letters_across_shards(redis_cluster: RedisClusterServers,
                                                            stream_name: str) -> None:
    env, client = _env(redis_cluster), redis_cluster.client()
    try:
        loaded = run("loadgen", "--fps", "400", "--duration", "1", "--size", "32x24", "--cameras", "5",
                     "--stream", stream_name, "--json", env=env)
        assert loaded.returncode == 0, loaded.stderr
        published = int(last_json(loaded.stdout)["published"])  # type: ignore[call-overload]
        layout = ShardLayout(stream_name, SHARDS, cluster=True)
        used = [shard for shard in range(SHARDS) if client.xlen(layout.stream_key(shard))]
        assert len(used) > 1 and sum(client.xlen(layout.stream_key(shard)) for shard in used) == published
        client.xadd(layout.stream_key(used[0]), {"h": b"\xc1 not msgpack", "p": b"x"})  # from outside
        consumed = run("consume", "--stream", stream_name, "--idle-exit", "1", "--json", env=env)
        assert consumed.returncode == 0, consumed.stderr
        assert (last_json(consumed.stdout)["consumed"], last_json(consumed.stdout)["dead_lettered"]) == (published, 1)
        listed = run("dlq", "list", "--stream", stream_name, "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        (letter,) = json.loads(listed.stdout)
        assert letter["id"].startswith(f"{used[0]}/") and letter["reason"] == "bad_header"
        purged = run("dlq", "purge", "--stream", stream_name, "--yes", letter["id"], env=env)
        assert purged.returncode == 0, purged.stderr
        assert "purged 1 dead letter(s)" in purged.stdout
    finally:
        for key in _keys(stream_name):
            client.delete(key)
        client.close()


def test_the_demo_runs_on_the_cluster_and_deletes_its_shards(redis_cluster: RedisClusterServers,
                                                             stream_name: str) -> None:
    client: RedisCluster = redis_cluster.client()
    result = run("demo", "--stream", stream_name, "--duration", "1", "--fps", "50", "--size", "32x24",
                 env=_env(redis_cluster))
    assert result.returncode == 0, result.stderr  # the demo exits 1 when a frame was lost or duplicated
    counts = {line.split()[1]: int(line.split()[-1]) for line in result.stdout.splitlines()
              if line.split()[:2] in (["frames", "in"], ["frames", "out"])}
    assert counts["in"] == counts["out"] > 0
    assert not any(client.exists(key) for key in _keys(stream_name))
    client.close()
