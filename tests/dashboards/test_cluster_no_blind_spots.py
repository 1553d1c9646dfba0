"""No blind spots on a Redis Cluster: redis_exporter scrapes every node of a real six-node cluster (its
multi-target /scrape endpoint), Prometheus runs the prometheus role's configuration for those nodes, and every
Redis panel of the dashboard (the Redis Cluster row, the per-node rows, the Redis row) and every cluster alert is
run against it; then a master is killed and the dashboard and alerts must show the failover.

The service has no cluster mode yet, so its panels are left to test_no_blind_spots.py; the shard streams the
service would write are written by the fixture (``shard_streams`` in stack.py).
"""

from __future__ import annotations

import pytest

from frame_buffer.promql import Queries
from frame_buffer.queue.redis_streams.shards import ShardLayout
from frame_buffer.queue.settings import DEFAULT_STREAM
from tests.cluster_servers import RedisClusterServers
from tests.dashboards.dashboard_queries import CLUSTER_RULES, DASHBOARDS, alert_rules, rules_in
from tests.dashboards.live_checks import alert_rule_problems, metrics_without_series, queries_without_data
from tests.dashboards.stack import CLUSTER_SHARDS, Prometheus, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
DEADLINE_S = 120.0
#: The dashboard's expressions with every node and stream selected, and a rate window of 15 scrapes.
Q = Queries(window="15s", filters={"instance": ".+", "stream": ".+"})
#: The alerts on Redis (redis.yml and the cluster's): none of them may even be pending on a healthy cluster.
REDIS_ALERTS = {rule["alert"] for name in ("redis.yml", CLUSTER_RULES)
                for rule in rules_in(DASHBOARDS / "alerts" / name)}


def instance(node_port: int) -> str:
    """The instance label of a node: its host:port, as the role's relabelling makes it."""
    return f"127.0.0.1:{node_port}"


def by_instance(prom: Prometheus, expr: str) -> dict[str, float]:
    """instance -> value of each series of an instant query."""
    return {sample["metric"].get("instance", ""): float(sample["value"][1]) for sample in prom.query(expr)}


def scalar(prom: Prometheus, expr: str) -> float | None:
    """The value of a query that returns one series, or None while it returns none."""
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


def active_alerts(prom: Prometheus) -> dict[tuple[str, str], str]:
    """(alert name, instance) -> state (pending or firing)."""
    return {(alert["labels"]["alertname"], alert["labels"].get("instance", "")): alert["state"]
            for alert in prom.api("alerts")["alerts"]}


def test_every_node_is_a_target_with_redis_up(cluster_stack: tuple[Prometheus, RedisClusterServers]) -> None:
    """One target per node, labelled with the node's host:port, and redis_up 1 for each."""
    prom, cluster = cluster_stack
    expected = {instance(node.port): 1.0 for node in cluster.nodes}
    wait_for("redis_up 1 for every node", lambda: by_instance(prom, 'redis_up{job="redis"}') == expected)


def test_every_redis_panel_query_returns_data(cluster_stack: tuple[Prometheus, RedisClusterServers]) -> None:
    """Each query that reads only redis_exporter's series (the Redis Cluster row, the node rows, the Redis
    row), variables resolved from this Prometheus, returns a number."""
    prom, _ = cluster_stack
    lines = queries_without_data(prom, lambda query: query.redis_only, DEADLINE_S)
    assert not lines, "dashboard queries without data on a cluster:\n" + "\n".join(lines) + "\n" + prom.logs()


def test_the_cluster_alerts_evaluate_and_read_scraped_metrics(
    cluster_stack: tuple[Prometheus, RedisClusterServers],
) -> None:
    """Every rule evaluates, and every metric a cluster alert reads has series (a misspelt one never fires)."""
    prom, _ = cluster_stack
    problems = alert_rule_problems(prom, DEADLINE_S)
    assert not problems, "\n".join(problems) + "\n" + prom.logs()
    missing = metrics_without_series(prom, alert_rules(cluster=True), DEADLINE_S)
    assert not missing, f"metrics read by cluster alerts but scraped by no target (metric: alert): {missing}"


def test_a_healthy_cluster_looks_healthy(cluster_stack: tuple[Prometheus, RedisClusterServers]) -> None:
    """State ok, all slots served, every master with its replica, all six nodes up and known, the shard
    streams on the three masters; and no Redis alert even pending."""
    prom, cluster = cluster_stack
    nodes = len(cluster.nodes)
    expected = {
        Q.cluster_worst("redis_cluster_state"): 1.0,
        Q.cluster_worst("redis_cluster_slots_ok"): 16384.0,
        Q.masters_without_replica(): 0.0,
        Q.nodes_up(): float(nodes),
        Q.cluster_worst("redis_cluster_known_nodes"): float(nodes),
        Q.cluster_most("redis_cluster_size"): 3.0,
        f"sum({Q.streams_per_node()})": 2.0 * CLUSTER_SHARDS,  # each shard: its stream and dead letters
        f"sum({Q.redis_role()})": 3.0,  # three masters
    }
    wait_for("the cluster panels to show a healthy cluster",
             lambda: {expr: scalar(prom, expr) for expr in expected} == expected)
    masters = {instance(node.port) for node in cluster.masters()}
    assert set(by_instance(prom, Q.streams_per_node())) == masters, "shard streams reported by a replica"
    active = {key: state for key, state in active_alerts(prom).items() if key[0] in REDIS_ALERTS}
    assert not active, f"Redis alerts active on a healthy cluster: {active}"


def test_a_master_failover_shows_on_the_dashboard_and_in_the_alerts(
    cluster_stack: tuple[Prometheus, RedisClusterServers],
) -> None:
    """SIGKILL the master of shard 0: RedisDown for that node, its replica turns master (a role change) and is
    a master without replica (RedisMasterWithoutReplica pending), and the shard's streams are reported by it;
    the killed node restarted rejoins as a replica and every master has a replica again."""
    prom, cluster = cluster_stack
    slot = ShardLayout(DEFAULT_STREAM, CLUSTER_SHARDS, cluster=True).slot(0)
    master = cluster.master_of_slot(slot)
    dead = instance(master.port)
    cluster.kill(master)
    try:
        promoted = instance(cluster.wait_for_failover(master, slot).port)

        def failover_seen() -> bool:
            active = active_alerts(prom)
            return (("RedisDown", dead) in active and ("RedisMasterWithoutReplica", promoted) in active
                    and by_instance(prom, Q.redis_role()).get(promoted) == 1.0
                    and (scalar(prom, Q.failovers("5m")) or 0.0) >= 1.0
                    and scalar(prom, Q.masters_without_replica()) == 1.0
                    and promoted in by_instance(prom, Q.streams_per_node()))

        wait_for(f"the failover of {dead} to {promoted} on the dashboard and in the alerts", failover_seen,
                 timeout_s=DEADLINE_S, proc=prom.processes["prometheus"])
        cluster.restart(master)

        def rejoined() -> bool:
            return (by_instance(prom, Q.redis_role()).get(dead) == 0.0
                    and scalar(prom, Q.masters_without_replica()) == 0.0
                    and scalar(prom, Q.nodes_up()) == float(len(cluster.nodes)))

        wait_for(f"{dead} back as a replica on the dashboard", rejoined, timeout_s=DEADLINE_S,
                 proc=prom.processes["prometheus"])
    finally:
        cluster.ensure_healthy()
