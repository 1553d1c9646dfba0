"""roles/frame_buffer/files/verify_streams.py, the frame_buffer role's verify inside the service's container, run
here against real servers: a redis-server of the test's own and the six-node test cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from frame_buffer.queue.redis_streams.shards import ShardLayout
from tests.cluster_servers import RedisClusterServers
from tests.deploy.conftest import ROOT
from tests.servers import RedisServer

SCRIPT = ROOT / "roles" / "frame_buffer" / "files" / "verify_streams.py"


def verify(env: dict[str, str]) -> dict[str, dict[str, dict[str, object]]]:
    """Run the script as the role does (``python -`` with the script on stdin) with ``env`` as its environment."""
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "service"), **env}
    proc = subprocess.run([sys.executable, "-"], input=SCRIPT.read_text(), env=full, capture_output=True,
                          text=True, timeout=60, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_standalone_stream_and_the_default_users_rights(redis_server: RedisServer, stream_name: str) -> None:
    client = redis_server.client()
    client.xgroup_create(stream_name, "workers", id="0", mkstream=True)
    client.xadd(stream_name, {"f": "1"})

    out = verify({"FRAME_BUFFER_REDIS_URL": redis_server.url, "FRAME_BUFFER_STREAM": stream_name})

    assert out["streams"] == {stream_name: {"length": 1, "groups": 1}}
    # The default user may run both: queued, then discarded, so the stream is still there.
    assert out["refused"] == {f"127.0.0.1:{redis_server.port}": {"FLUSHALL": None, "CONFIG": None}}
    assert client.xlen(stream_name) == 1


def test_a_restricted_user_is_refused_flushall_and_config(redis_server: RedisServer, stream_name: str) -> None:
    client = redis_server.client()
    client.xgroup_create(stream_name, "workers", id="0", mkstream=True)
    client.acl_setuser("fb", enabled=True, passwords=["+fb-pass"], keys=[f"{stream_name}*"],
                       commands=["+@stream", "+multi", "+exec", "+ping"])
    url = f"redis://fb:fb-pass@127.0.0.1:{redis_server.port}/0"

    out = verify({"FRAME_BUFFER_REDIS_URL": url, "FRAME_BUFFER_STREAM": stream_name})

    assert out["streams"] == {stream_name: {"length": 0, "groups": 1}}
    refused = out["refused"][f"127.0.0.1:{redis_server.port}"]
    assert "NOPERM" in str(refused["FLUSHALL"]).upper() or "permission" in str(refused["FLUSHALL"])
    assert "NOPERM" in str(refused["CONFIG"]).upper() or "permission" in str(refused["CONFIG"])


def test_missing_stream_is_reported(redis_server: RedisServer, stream_name: str) -> None:
    out = verify({"FRAME_BUFFER_REDIS_URL": redis_server.url, "FRAME_BUFFER_STREAM": stream_name})
    assert "error" in out["streams"][stream_name]


def test_cluster_every_shard_stream(redis_cluster: RedisClusterServers, stream_name: str) -> None:
    layout = ShardLayout(stream_name, 4, cluster=True)
    client = redis_cluster.client()
    try:
        for stream, _ in layout.shard_keys()[:3]:
            client.xgroup_create(stream, "workers", id="0", mkstream=True)
        env = {"FRAME_BUFFER_REDIS_MODE": "cluster", "FRAME_BUFFER_REDIS_URL": redis_cluster.seed_urls,
               "FRAME_BUFFER_STREAM": stream_name, "FRAME_BUFFER_SHARDS": "4"}

        out = verify(env)
        keys = [stream for stream, _ in layout.shard_keys()]
        assert sorted(out["streams"]) == sorted(keys)
        assert all(out["streams"][k] == {"length": 0, "groups": 1} for k in keys[:3])
        assert "error" in out["streams"][keys[3]]  # the fourth shard was never made
        assert len(out["refused"]) == len(redis_cluster.nodes)

        client.xgroup_create(keys[3], "workers", id="0", mkstream=True)
        assert all("error" not in v for v in verify(env)["streams"].values())
    finally:
        for stream, _ in layout.shard_keys():
            client.delete(stream)
        client.close()

