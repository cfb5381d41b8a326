"""/ops, /metrics, /healthz and redis_audit on a cluster session: each node of the cache and
state roles, and the role's figures summed over its primaries.

Run with KESTREL_TEST_CLUSTER=1 (`make test-cluster`), where each role is a cluster of three
primaries (tests.cluster_session; the cache's nodes have maxmemory 64mb); skipped on one server.
"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from redis.crc import key_slot

from core.keys import key
from core.redis import get_redis
from ops import dashboard
from ops.audit import ERROR, OK, WARNING, AuditOptions, run_audit
from ops.charts import node_field
from ops.keys import ops_samples_key
from ops.monitoring import build_registry

pytestmark = pytest.mark.django_db

CACHE_MAXMEMORY = 64 * 1024 * 1024  # each cache node's (tests.cluster_session)
TOKEN = "a-long-random-scrape-token"


def addresses(cluster) -> list[str]:
    return [f"{host}:{port}" for host, port in cluster.primaries()]


def serving(cluster, name: str) -> str:
    """The address of the primary that holds key `name`."""
    host, port = cluster.node_for_slot(key_slot(name.encode()))
    return f"{host}:{port}"


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(is_staff=True))
    return client


@pytest.fixture
def token(settings):
    settings.KESTREL_METRICS_TOKEN = TOKEN
    return TOKEN


def stopped_primary(cluster, keep: str):
    """Stop a primary of `cluster` that does not hold key `keep`, for one test (no replica,
    and the session's node timeout is long: its slots stay its own); yield its address."""
    host, port = next((host, port) for host, port in cluster.primaries() if f"{host}:{port}" != serving(cluster, keep))
    cluster.servers[port].stop()
    try:
        yield f"{host}:{port}"
    finally:
        cluster.start()  # returns once the cluster serves every slot again


@pytest.fixture
def state_primary_stopped(cluster_session):
    """A primary of the state role stopped, not the one of the /ops samples' stream."""
    yield from stopped_primary(cluster_session.state, ops_samples_key())


@pytest.fixture
def cache_primary_stopped(cluster_session):
    """A primary of the cache role stopped (the cache fails open: pages still render)."""
    yield from stopped_primary(cluster_session.cache, key("posts", "post", 0))


def cache_keys(count: int, **kwargs) -> list[str]:
    """`count` cache keys over every primary (one id each: one hash tag each), set to "x"."""
    names = [key("posts", "post", n) for n in range(count)]
    pipe = get_redis("cache").pipeline(transaction=False)
    for name in names:
        pipe.set(name, "x", **kwargs)
    pipe.execute()
    return names


# --- /ops ----------------------------------------------------------------------------


def test_each_node_of_a_cluster_role_has_its_figures_and_the_role_their_sum(cluster_session):
    cache_keys(30, ex=60)
    get_redis("cache").get(key("posts", "post", 0))  # a hit

    cache = dashboard.role_figures("cache", get_redis("cache"))

    assert cache.up
    assert sorted(node.address for node in cache.nodes) == sorted(addresses(cluster_session.cache))
    assert {node.kind for node in cache.nodes} == {"primary"}
    assert sum(node.slot_count for node in cache.nodes) == 16384
    assert cache.nodes[0].slot_ranges.startswith("0-")  # in slot order
    for node in cache.nodes:
        assert node.up
        assert (node.policy, node.maxmemory) == ("allkeys-lru", CACHE_MAXMEMORY)
    # The role's figures are the sum over its primaries, from the same replies.
    assert cache.maxmemory == 3 * CACHE_MAXMEMORY
    assert cache.maxmemory_human == "192.00M"
    assert cache.used_memory == sum(node.used_memory for node in cache.nodes)
    assert cache.connected_clients == sum(node.connected_clients for node in cache.nodes)
    assert cache.evicted_keys == sum(node.evicted_keys for node in cache.nodes)
    assert cache.policy == "allkeys-lru"
    assert cache.hit_ratio is not None
    assert cache.run_id == ""  # never "one server"


def test_the_page_shows_each_node_and_no_one_server_note(staff_client, cluster_session):
    response = staff_client.get(reverse("ops"))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="one-server-note"' not in html
    for role, cluster in (("cache", cluster_session.cache), ("state", cluster_session.state)):
        table = html.split(f'id="nodes-{role}"', 1)[1].split("</table>", 1)[0]
        rows = re.findall(r'<tr class="node"><td><code>([^<]+)</code></td><td>(\w+)', table)
        assert sorted(rows) == sorted((address, "primary") for address in addresses(cluster))
        assert "(0-5460)" in table  # the first primary's slots
    assert html.count("A Redis Cluster: the sum over its primaries") == 2


def test_the_page_shows_a_primary_that_does_not_answer(staff_client, cache_primary_stopped):
    response = staff_client.get(reverse("ops"))

    html = response.content.decode()
    assert response.status_code == 200
    cache = html.split('id="nodes-cache"', 1)[1].split("</table>", 1)[0]
    down = cache.split(f"<code>{cache_primary_stopped}</code>", 1)[1].split("</tr>", 1)[0]
    assert '<span class="level error">down</span> ConnectionError' in down
    assert cache.count('<span class="level error">down</span>') == 1
    assert f"primaries that did not answer: {cache_primary_stopped} (ConnectionError)" in html


def test_the_slowlog_of_a_cluster_role_names_the_node_of_each_entry(role_config, cluster_session):
    role_config("state", "slowlog-log-slower-than", "0")
    name = key("posts", "post", 42)
    get_redis("state").set(name, "x")

    state = dashboard.role_figures("state", get_redis("state"))

    (entry,) = [entry for entry in state.slowlog if entry["command"] == "SET"]
    assert entry["family"] == "posts:post"
    assert entry["node"] == serving(cluster_session.state, name)


# --- Samples and charts ----------------------------------------------------------------


def test_a_sample_has_each_nodes_figures_and_the_roles_sum(staff_client, cluster_session):
    dashboard.ops_sample()
    entry = dashboard.ops_sample()

    for role, cluster in (("cache", cluster_session.cache), ("state", cluster_session.state)):
        nodes = addresses(cluster)
        for address in nodes:
            for name in ("used_memory", "hit_ratio", "ops_per_sec", "evicted", "clients"):
                assert node_field(role, address, name) in entry
            assert entry[node_field(role, address, "primary")] == "1"
        for name in ("used_memory", "clients", "hits", "evicted_total"):
            assert float(entry[f"{role}_{name}"]) == sum(float(entry[node_field(role, a, name)]) for a in nodes)

    html = staff_client.get(reverse("ops")).content.decode()

    groups = re.findall(r"<h3>(Cache role|State role)(?:, primary ([\d.:]+))?</h3>", html)
    assert groups == [
        ("Cache role", ""),
        *(("Cache role", a) for a in sorted(addresses(cluster_session.cache))),
        ("State role", ""),
        *(("State role", a) for a in sorted(addresses(cluster_session.state))),
    ]
    address = addresses(cluster_session.cache)[0]
    assert f'data-field="{node_field("cache", address, "used_memory")}"' in html


def test_a_sample_leaves_out_a_roles_sum_while_a_primary_does_not_answer(state_primary_stopped, cluster_session):
    entry = dashboard.ops_sample(clients={"state": get_redis("state"), "cache": get_redis("cache")})

    assert "state_used_memory" not in entry  # a gap, not a sum that misses a third
    assert node_field("state", state_primary_stopped, "used_memory") not in entry
    for address in set(addresses(cluster_session.state)) - {state_primary_stopped}:
        assert node_field("state", address, "used_memory") in entry
    assert "cache_used_memory" in entry


# --- /metrics --------------------------------------------------------------------------


def test_metrics_have_each_nodes_figures_and_the_roles_sum_over_its_primaries(client, token, cluster_session):
    names = cache_keys(30, ex=60)
    registry = build_registry()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()

    nodes = addresses(cluster_session.cache)
    assert value("kestrel_redis_up", role="cache") == 1
    assert value("kestrel_redis_memory_max_bytes", role="cache") == 3 * CACHE_MAXMEMORY
    assert value("kestrel_redis_keys", role="cache") == 30
    assert sum(value("kestrel_redis_node_slots", role="cache", node=node) for node in nodes) == 16384
    assert sum(value("kestrel_redis_node_keys", role="cache", node=node) for node in nodes) == 30
    assert value("kestrel_redis_node_keys", role="cache", node=serving(cluster_session.cache, names[0])) >= 1
    for node in nodes:
        assert value("kestrel_redis_node_up", role="cache", node=node) == 1
        assert value("kestrel_redis_node_memory_max_bytes", role="cache", node=node) == CACHE_MAXMEMORY
        assert value("kestrel_redis_node_info", role="cache", node=node, node_role="primary", replica_of="") == 1
        labels = f'node="{node}",policy="allkeys-lru",role="cache"'
        assert f"kestrel_redis_node_maxmemory_policy_info{{{labels}}} 1.0" in body
        assert f'kestrel_redis_node_evicted_keys_total{{node="{node}",role="cache"}}' in body
        assert f'kestrel_redis_node_keyspace_hits_total{{node="{node}",role="cache"}}' in body
    assert 'kestrel_redis_maxmemory_policy_info{policy="allkeys-lru",role="cache"} 1.0' in body
    assert "# TYPE kestrel_redis_node_server_commands_processed_total counter" in body
    assert 'kestrel_redis_up{role="queue"} 1.0' in body
    node_samples = [line for line in body.splitlines() if line.startswith("kestrel_redis_node_")]
    assert node_samples
    assert not [line for line in node_samples if 'role="queue"' in line]  # a single server: no node figures


def test_metrics_say_which_primary_is_down_and_leave_out_the_roles_sum(client, token, state_primary_stopped):
    registry = build_registry()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("kestrel_redis_up", role="state") == 0
    assert value("kestrel_redis_memory_used_bytes", role="state") is None  # no figures rather than wrong ones
    assert value("kestrel_redis_node_up", role="state", node=state_primary_stopped) == 0
    assert value("kestrel_redis_node_slots", role="state", node=state_primary_stopped) > 0
    assert value("kestrel_redis_up", role="cache") == 1


# --- /healthz --------------------------------------------------------------------------


def test_healthz_probes_each_node_of_a_cluster_role(client, cluster_session):
    response = client.get("/healthz")

    body = response.json()
    assert response.status_code == 200
    assert set(body["checks"]) == {"redis_state", "redis_cache", "redis_queue", "database"}
    assert "nodes" not in body["checks"]["redis_queue"]  # a single server: as before
    for role, cluster in (("cache", cluster_session.cache), ("state", cluster_session.state)):
        check = body["checks"][f"redis_{role}"]
        assert check["ok"] is True
        assert set(check["nodes"]) == set(addresses(cluster))
        for node in check["nodes"].values():
            assert node["ok"] is True
            assert node["role"] == "primary"
            assert re.fullmatch(r"\d+-\d+", node["slots"])
            assert node["latency_ms"] >= 0
        assert sorted(node["slots"] for node in check["nodes"].values())[0] == "0-5460"


def test_healthz_fails_a_role_while_a_primary_does_not_answer(client, state_primary_stopped):
    response = client.get("/healthz")

    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["redis_state"]
    state = body["checks"]["redis_state"]
    assert state["ok"] is False
    assert state["error"].startswith("ClusterUnavailable: the state role's cluster: primaries did not answer: ")
    assert state_primary_stopped in state["error"]
    assert state["nodes"][state_primary_stopped]["ok"] is False
    assert "ConnectionError" in state["nodes"][state_primary_stopped]["error"]
    assert [node["ok"] for node in state["nodes"].values()].count(True) == 2
    assert body["checks"]["redis_cache"]["ok"] is True


def test_healthz_lists_the_nodes_of_a_cluster_that_does_not_answer_from_its_slot_map(client, cluster_session):
    nodes = addresses(cluster_session.state)
    cluster_session.state.stop()
    try:
        response = client.get("/healthz")
    finally:
        cluster_session.state.start()

    state = response.json()["checks"]["redis_state"]
    assert response.status_code == 503
    assert state["error"].startswith("ClusterUnavailable: ")
    assert set(state["nodes"]) == set(nodes)  # no node could give CLUSTER SHARDS: this process's slot map
    assert [node["ok"] for node in state["nodes"].values()] == [False] * 3
    assert sorted(node["slots"] for node in state["nodes"].values())[0] == "0-5460"


# --- redis_audit -----------------------------------------------------------------------


def test_the_audit_reads_every_node_of_a_cluster_role(cluster_session):
    report = run_audit()

    def of(rule: str, role: str) -> list:
        return [finding for finding in report.findings if finding.rule == rule and finding.role == role]

    assert report.broken == []
    (reachable,) = of("reachable", "state")
    assert reachable.level == OK
    assert reachable.message == "the state role's Redis Cluster answers: 3 primaries, 0 replicas"
    assert len(reachable.details) == 3
    assert [finding.level for finding in of("layout", "both")] == [OK]  # separate servers
    for role, cluster in (("cache", cluster_session.cache), ("state", cluster_session.state)):
        evictions = of("eviction", role)
        assert sorted(finding.node for finding in evictions) == sorted(addresses(cluster))
        assert {finding.level for finding in evictions} == {OK}  # cache: allkeys-lru with a maxmemory
        assert sorted(finding.node for finding in of("slowlog", role)) == sorted(addresses(cluster))
    persistence = of("persistence", "state")
    assert sorted(finding.node for finding in persistence) == sorted(addresses(cluster_session.state))
    assert {finding.level for finding in persistence} == {WARNING}  # the session's nodes write no AOF


def test_the_audit_scans_every_primary_for_keys_without_a_ttl(cluster_session):
    names = cache_keys(30)  # no TTL

    report = run_audit()
    limited = run_audit(AuditOptions(max_keys=6))

    (finding,) = [finding for finding in report.findings if finding.rule == "cache_ttl"]
    assert finding.level == ERROR
    assert finding.message.startswith("30 of 30 cache keys scanned on 3 primaries have no TTL")
    assert {serving(cluster_session.cache, name) for name in names} == set(addresses(cluster_session.cache))
    (finding,) = [finding for finding in limited.findings if finding.rule == "cache_ttl"]
    assert finding.message.startswith("6 of 6 cache keys scanned on 3 primaries have no TTL (stopped at --max-keys)")


def test_the_audit_names_the_node_of_a_big_key_and_of_an_evicting_primary(role_config, cluster_session):
    big = key("core", "probe", "big")
    get_redis("state").set(big, "x" * 20_000)
    host, port = cluster_session.state.primaries()[2]
    cluster_session.state.client(port).config_set("maxmemory-policy", "allkeys-lru")
    try:
        report = run_audit(AuditOptions(big_key_bytes=10_000))
        out = StringIO()
        with pytest.raises(CommandError, match=rf"eviction \(state {host}:{port}\)"):
            call_command("redis_audit", stdout=out)
    finally:
        cluster_session.state.client(port).config_set("maxmemory-policy", "noeviction")

    (finding,) = [finding for finding in report.findings if finding.rule == "big_keys" and finding.role == "state"]
    assert finding.details[0].startswith(f"{big}: ")
    assert finding.details[0].endswith(f" bytes (on {serving(cluster_session.state, big)})")
    evicting = [finding for finding in report.findings if finding.rule == "eviction" and finding.level == ERROR]
    assert [(finding.role, finding.node) for finding in evicting] == [("state", f"{host}:{port}")]
    assert f"ERROR   state eviction    {host}:{port}: The state role has maxmemory-policy 'allkeys-lru'" in (
        out.getvalue()
    )
