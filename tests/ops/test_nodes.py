"""ops.nodes on a cluster with replicas: who serves what (CLUSTER SHARDS), each node's figures,
and role totals that count the primaries only. The cache role moves to the module's own
cluster, so these run in either session; the sums and the chart groups need no Redis.
"""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from core.keys import key
from core.redis import get_redis
from devstack.redis_cluster import LocalCluster
from ops import dashboard
from ops.audit import OK, run_audit
from ops.charts import BYTES, Chart, node_field, node_groups
from ops.health import check_all
from ops.monitoring import build_registry
from ops.nodes import human_bytes, role_nodes, summed_info
from tests.clients import caches_on_clusters

MAXMEMORY = 32 * 1024 * 1024  # each node's


@pytest.fixture(scope="module")
def replicated():
    """Two primaries with a replica each, configured as a cache role's nodes."""
    config = {"maxmemory": "32mb", "maxmemory-policy": "allkeys-lru", "appendonly": "no"}
    with LocalCluster(primaries=2, replicas_per_primary=1, node_timeout_ms=60_000, extra_config=config) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def replicated_caches(replicated):
    """settings.CACHES with the cache role on the replicated cluster; its client closed after the module."""
    setting = caches_on_clusters({"cache": replicated.url}, timeout=1)
    yield setting
    with override_settings(CACHES=setting):
        get_redis("cache").close()


@pytest.fixture
def cache_on_replicated(replicated_caches):
    """The cache role on the replicated cluster for one test; its client, once each replica is
    online (a replica that has copied nothing yet is "loading", and out of CLUSTER SLOTS)."""
    with override_settings(CACHES=replicated_caches):
        client = get_redis("cache")
        client.flushdb()
        for n in range(20):
            client.set(key("posts", "post", n), "x", ex=60)
        deadline = time.monotonic() + 20
        while {node.health for node in role_nodes(client)} != {"online"} or len(client.get_replicas()) < 2:
            assert time.monotonic() < deadline, "the replicas did not come online"
            time.sleep(0.1)
            client.nodes_manager.initialize()  # the slot map, with the replicas now online
        yield client
        client.flushdb()


@pytest.mark.slow
def test_the_nodes_are_each_primary_then_its_replicas_from_the_cluster(cache_on_replicated, replicated):
    nodes = role_nodes(cache_on_replicated)

    assert [node.kind for node in nodes] == ["primary", "replica", "primary", "replica"]
    assert nodes[0].slot_ranges == "0-8191"
    assert nodes[2].slot_ranges == "8192-16383"
    assert (nodes[1].replica_of, nodes[3].replica_of) == (nodes[0].address, nodes[2].address)
    assert (nodes[1].slots, nodes[1].slot_count) == ((), 0)  # a replica serves none
    assert sorted(node.address for node in nodes) == sorted(f"{host}:{port}" for host, port in replicated.seed_nodes)
    assert all(node.client is not None and node.health == "online" for node in nodes)


@pytest.mark.slow
def test_a_roles_totals_are_the_sum_over_its_primaries_only(cache_on_replicated):
    figures = dashboard.role_figures("cache", cache_on_replicated)
    registry = build_registry({"cache": cache_on_replicated})

    assert figures.up
    assert [(node.kind, node.up) for node in figures.nodes] == [(kind, True) for kind in ("primary", "replica") * 2]
    assert figures.maxmemory == 2 * MAXMEMORY  # not 4: a replica's memory is its copy
    primaries = [node for node in figures.nodes if node.kind == "primary"]
    assert figures.used_memory == sum(node.used_memory for node in primaries)
    assert registry.get_sample_value("kestrel_redis_memory_max_bytes", {"role": "cache"}) == 2 * MAXMEMORY
    assert registry.get_sample_value("kestrel_redis_keys", {"role": "cache"}) == 20
    replica = figures.nodes[1]
    labels = {"role": "cache", "node": replica.address}
    assert registry.get_sample_value("kestrel_redis_node_keys", labels) > 0  # its copy
    assert registry.get_sample_value("kestrel_redis_node_slots", labels) == 0
    info = {**labels, "node_role": "replica", "replica_of": replica.replica_of}
    assert registry.get_sample_value("kestrel_redis_node_info", info) == 1


@pytest.mark.slow
def test_a_replica_that_does_not_answer_shows_without_failing_the_role(cache_on_replicated, replicated):
    replica = role_nodes(cache_on_replicated)[1]
    port = int(replica.address.rpartition(":")[2])
    replicated.servers[port].stop()
    try:
        (probe,) = [probe for probe in check_all() if probe.name == "redis_cache"]
        figures = dashboard.role_figures("cache", cache_on_replicated)
        report = run_audit(clients={"cache": cache_on_replicated})
    finally:
        replicated.start()

    assert probe.ok
    assert probe.nodes is not None
    assert probe.nodes[replica.address]["ok"] is False
    assert probe.nodes[replica.address]["replica_of"] == replica.replica_of
    assert [node["ok"] for node in probe.nodes.values()].count(True) == 3
    assert figures.up
    assert [node.address for node in figures.nodes if not node.up] == [replica.address]
    (reachable,) = [finding for finding in report.findings if finding.rule == "reachable"]
    assert reachable.level == OK  # every primary answers
    assert any(
        line.startswith(f"replica {replica.address} ") and "did not answer" in line for line in reachable.details
    )
    assert len([finding for finding in report.findings if finding.rule == "eviction"]) == 3  # the nodes that answered


# --- Without Redis ---------------------------------------------------------------------


def test_summed_info_adds_the_primaries_figures_as_one_servers_info_reads():
    one = {"used_memory": 1024, "used_memory_rss": 4096, "maxmemory": 2048, "keyspace_hits": 3, "keyspace_misses": 1}
    two = {"used_memory": 3072, "used_memory_rss": 4096, "maxmemory": 2048, "keyspace_hits": 5, "keyspace_misses": 7}
    one |= {"evicted_keys": 2, "instantaneous_ops_per_sec": 10, "db0": {"keys": 4}, "maxmemory_policy": "allkeys-lru"}
    two |= {"evicted_keys": 1, "instantaneous_ops_per_sec": 5, "db0": {"keys": 6}, "maxmemory_policy": "allkeys-lru"}

    total = summed_info([one, two])

    assert (total["used_memory"], total["maxmemory"], total["evicted_keys"]) == (4096, 4096, 3)
    assert (total["keyspace_hits"], total["keyspace_misses"]) == (8, 8)
    assert (total["instantaneous_ops_per_sec"], total["db0"]) == (15, {"keys": 10})
    assert (total["used_memory_human"], total["mem_fragmentation_ratio"]) == ("4.00K", 2.0)
    assert total["maxmemory_policy"] == "allkeys-lru"
    assert (
        summed_info([one, {**two, "maxmemory_policy": "noeviction"}])["maxmemory_policy"] == "allkeys-lru, noeviction"
    )


@pytest.mark.parametrize(
    ("size", "written"), [(0, "0B"), (1023, "1023B"), (1536, "1.50K"), (5 * 2**20, "5.00M"), (3 * 2**30, "3.00G")]
)
def test_sizes_are_written_as_info_writes_them(size, written):
    assert human_bytes(size) == written


def test_each_node_in_the_samples_gets_a_group_of_the_roles_charts_primaries_first():
    charts = (Chart("cache_used_memory", "Memory used", BYTES, zero=False),)
    series = {
        node_field("cache", "10.0.0.9:7000", "used_memory"): [(1.0, 5.0)],
        node_field("cache", "10.0.0.9:7000", "primary"): [(1.0, 0.0)],
        node_field("cache", "redis_2:7001", "used_memory"): [(1.0, 6.0)],
        node_field("cache", "redis_2:7001", "primary"): [(1.0, 1.0)],
        node_field("state", "10.0.0.1:7000", "used_memory"): [(1.0, 7.0)],
    }

    groups = node_groups("Cache role", charts, series)

    assert [(name, [chart.field for chart in charts]) for name, charts in groups] == [
        ("Cache role, primary redis_2:7001", ["cache@redis_2:7001/used_memory"]),
        ("Cache role, replica 10.0.0.9:7000", ["cache@10.0.0.9:7000/used_memory"]),
    ]
    assert node_groups("Kestrel and its queues", charts, series) == []
