"""The stacks: ``stack``, a real Redis, redis_exporter, ``frame-buffer run`` and Prometheus; ``cluster_stack``,
redis_exporter scraping every node of the six-node Redis Cluster and Prometheus (see stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster_servers import RedisClusterServers
from tests.dashboards.stack import Prometheus, running_cluster_stack, running_stack, shard_streams


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """The running stack; module-scoped, so nothing keeps loading the machine while other tests run."""
    with running_stack(tmp_path_factory.mktemp("monitoring")) as prom:
        yield prom


@pytest.fixture(scope="module")
def cluster_stack(
    tmp_path_factory: pytest.TempPathFactory, _redis_cluster_servers: RedisClusterServers
) -> Iterator[tuple[Prometheus, RedisClusterServers]]:
    """Prometheus scraping every node of the session's cluster (whole when the module starts, with the
    service's shard streams on it), and the cluster."""
    _redis_cluster_servers.ensure_healthy()
    with shard_streams(_redis_cluster_servers), running_cluster_stack(
        tmp_path_factory.mktemp("cluster-monitoring"), _redis_cluster_servers
    ) as prom:
        yield prom, _redis_cluster_servers
