#!/usr/bin/env python3
"""Failover drills on the test cluster (``tests/cluster_servers.py``, ``cluster-node-timeout`` 1000 ms), no load.

Each drill SIGKILLs the master of one slot and times two things: until every live node serves that slot from
the promoted replica and says ``cluster_state:ok`` (polled every 50 ms), and until a ``RedisCluster`` client
made before the kill has its first write to that slot accepted (retried on every error, 10 ms apart). The
killed node is then restarted in place and rejoins as a replica before the next drill. Prints p50 and max.
Run: ``PYTHONPATH=service:. .venv/bin/python scripts/cluster_failover_drills.py [drills]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.crc import key_slot

from tests.cluster_servers import NODE_TIMEOUT_MS, RedisClusterServers


def drill(servers: RedisClusterServers, key: str) -> tuple[float, float]:
    """(seconds to a settled slot map, seconds to the first accepted write) after one master's SIGKILL."""
    slot = key_slot(key.encode())
    client = servers.client()
    client.xadd(key, {"n": "before"})
    victim = servers.master_of_slot(slot)
    killed = time.monotonic()
    servers.kill(victim)
    written = None
    while written is None:  # the publisher's view: keep trying until a write lands
        try:
            client.xadd(key, {"n": "after"})
            written = time.monotonic() - killed
        except redis.RedisError:
            time.sleep(0.01)
    servers.wait_for_failover(victim, slot)
    settled = time.monotonic() - killed
    client.close()
    servers.restart(victim)
    return settled, written


def main() -> None:
    drills = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as work:
        servers = RedisClusterServers(Path(work)).start()
        try:
            results = [drill(servers, f"drill:{{{n}}}") for n in range(drills)]
        finally:
            servers.stop()
    settled = [r[0] for r in results]
    written = [r[1] for r in results]
    print(f"{drills} drills, cluster-node-timeout {NODE_TIMEOUT_MS} ms, no load")
    print("| measure | p50 s | max s | each s |")
    print("| --- | --- | --- | --- |")
    for name, values in (("SIGKILL to first accepted write (RedisCluster client)", written),
                         ("SIGKILL to every node agreeing, cluster_state:ok", settled)):
        each = " ".join(f"{value:.2f}" for value in values)
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} | {each} |")


if __name__ == "__main__":
    main()
