"""The frame_buffer role's verify (tasks/verify.yml) runs this inside the service's container, with the service's
own Python, code and environment, so that it asks Redis exactly what the service would:

- ``XINFO STREAM`` of every shard stream, named by the service's own ``ShardLayout`` (in standalone mode with one
  shard that is ``FRAME_BUFFER_STREAM`` itself; in cluster mode ``<stream>:{<tag>}`` per shard);
- whether the service's Redis user is refused ``FLUSHALL`` and ``CONFIG GET`` on every server it is given, probed
  inside ``MULTI`` on a connection that is then closed, which discards the transaction: a permission error comes
  back while the command is queued, and a command that is allowed is never run;
- the names of the ``frame_queue_*`` metrics on ``/metrics`` (when ``FRAME_BUFFER_HTTP_PORT`` is set).

Prints one JSON object; exit 0 whatever it finds (the role's assertions judge it).
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request

import redis
from redis.cluster import RedisCluster

from frame_buffer.config import DEFAULT_SHARDS
from frame_buffer.queue.redis_streams.shards import ShardLayout

#: What the service's user must not be allowed to run.
FORBIDDEN: tuple[tuple[str, ...], ...] = (("FLUSHALL",), ("CONFIG", "GET", "maxmemory"))


def refusal(url: str, command: tuple[str, ...]) -> str | None:
    """The error ``command`` gets while queued in a transaction on the server of ``url`` (None: it was queued, so
    the user may run it). The connection is closed before any EXEC, which discards the transaction: nothing runs."""
    client = redis.Redis.from_url(url, single_connection_client=True, socket_timeout=5)
    try:
        client.execute_command("MULTI")  # type: ignore[no-untyped-call]
        try:
            client.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.ResponseError as exc:
            return str(exc) or type(exc).__name__
        return None
    finally:
        # Closing the connection discards the transaction (the service's user may not send DISCARD).
        client.close()


def streams(urls: list[str], layout: ShardLayout) -> dict[str, dict[str, object]]:
    """``XINFO STREAM`` of every shard stream: its length and groups, or the error."""
    client: redis.Redis | RedisCluster
    if layout.cluster:
        client = RedisCluster.from_url(urls[0], socket_timeout=5)
    else:
        client = redis.Redis.from_url(urls[0], socket_timeout=5)
    found: dict[str, dict[str, object]] = {}
    try:
        for stream, _dead_letters in layout.shard_keys():
            try:
                info = client.xinfo_stream(stream)
                found[stream] = {"length": info["length"], "groups": info["groups"]}
            except redis.ResponseError as exc:
                found[stream] = {"error": str(exc)}
    finally:
        client.close()
    return found


def metric_names(port: str) -> list[str]:
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    names = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line.startswith("frame_queue_")}
    return sorted(names)


def main() -> None:
    mode = os.environ.get("FRAME_BUFFER_REDIS_MODE", "standalone")
    url = os.environ["FRAME_BUFFER_REDIS_URL"]
    urls = url.split(",") if mode == "cluster" else [url]
    shards = int(os.environ.get("FRAME_BUFFER_SHARDS") or DEFAULT_SHARDS[mode])
    layout = ShardLayout(os.environ.get("FRAME_BUFFER_STREAM", "frame_queue"), shards, cluster=mode == "cluster")
    result: dict[str, object] = {
        "streams": streams(urls, layout),
        # host:port only: the URLs carry the password.
        "refused": {
            str(urllib.parse.urlsplit(u).netloc.rpartition("@")[2]): {" ".join(c[:1]): refusal(u, c) for c in FORBIDDEN}
            for u in urls
        },
    }
    if port := os.environ.get("FRAME_BUFFER_HTTP_PORT"):
        result["metrics"] = metric_names(port)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
