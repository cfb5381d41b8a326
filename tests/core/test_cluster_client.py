"""The cache and state roles on a Redis Cluster: core.cluster's client, on a real local cluster."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.test import override_settings
from prometheus_client import REGISTRY
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import metrics
from core.checks import check_cache_role, check_redis_roles
from core.cluster import KestrelCluster
from core.instrumentation import InstrumentedRedisCluster, redis_client
from core.l1 import InvalidationSubscriber, invalidation_channel
from core.redis import (
    BREAKER_COOLDOWN,
    CircuitOpen,
    ClusterUnavailable,
    ClusterUnsupported,
    breaker,
    connection_pool_options,
    dedicated_pool,
    fail_open,
    get_redis,
    is_unavailable,
    redact_url,
)
from core.scripts import script_queue
from devstack.redis_cluster import LocalCluster
from tests.clients import caches_on_clusters

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 0.25  # seconds: the cluster roles' connect and socket timeouts here

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def cluster():
    """Three primaries for this module; a long node timeout, so a pause flags no node failing."""
    with LocalCluster(primaries=3, node_timeout_ms=60_000, extra_config={"appendonly": "no"}) as cluster:
        yield cluster


def _cluster_caches(url: str) -> dict:
    """settings.CACHES with the cache and state roles on the cluster at `url`, as settings.py builds them."""
    return caches_on_clusters({"cache": url, "state": url}, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def cluster_caches(cluster):
    caches_setting = _cluster_caches(cluster.url)
    yield caches_setting
    with override_settings(CACHES=caches_setting):
        for role in ("cache", "state"):
            get_redis(role).close()


@pytest.fixture
def on_cluster(cluster, cluster_caches):
    """The cache and state roles on the module's cluster for one test (the queue role stays put)."""
    with override_settings(CACHES=cluster_caches):
        for role in ("cache", "state"):
            breaker(role).reset()
            get_redis(role).flushdb()
        yield cluster


@pytest.fixture
def paused(on_cluster):
    """SIGSTOP every node of the cluster for one test; after it, wait until the cluster is whole."""
    servers = list(on_cluster.servers.values())
    for server in servers:
        server.pause()
    try:
        yield on_cluster
    finally:
        for server in servers:
            server.resume()
        on_cluster.start()  # returns once every node serves its slots again


@pytest.fixture
def stopped(on_cluster):
    """Stop every node of the cluster for one test, and start them again after."""
    on_cluster.stop()
    try:
        yield on_cluster
    finally:
        on_cluster.start()


def _keys_across_slots(count: int) -> list[str]:
    return [f"kestrel:tests:cluster:{n}" for n in range(count)]


def test_get_redis_on_a_cluster_url_is_one_working_cluster_client_per_role(on_cluster):
    client = get_redis("cache")
    seen_by_another_thread: list[object] = []
    thread = threading.Thread(target=lambda: seen_by_another_thread.append(get_redis("cache")))
    thread.start()
    thread.join()

    assert isinstance(client, RedisCluster)
    assert isinstance(client, InstrumentedRedisCluster)
    assert seen_by_another_thread == [client]  # one per role and process, whichever thread asks
    assert get_redis("state") is not client
    assert client.set("kestrel:tests:cluster:one", "1")
    assert client.get("kestrel:tests:cluster:one") == b"1"
    assert client.ping() is True  # every primary
    nodes = client.get_nodes()
    assert sorted((node.host, node.port) for node in nodes) == on_cluster.primaries()
    # The role's settings reach every node's connections: client name, timeouts, breaker.
    for node in nodes:
        connection = node.redis_connection.connection_pool.get_connection()
        try:
            assert connection.client_name == "kestrel-cache"
            assert connection.socket_timeout == connection.socket_connect_timeout == TIMEOUT
            assert connection.retry.breaker is breaker("cache")
        finally:
            node.redis_connection.connection_pool.release(connection)


def test_keys_land_on_every_primary_and_multi_key_reads_span_slots(on_cluster):
    state = get_redis("state")
    keys = _keys_across_slots(30)
    for key in keys:
        state.set(key, key.upper())

    held = {port: on_cluster.client(port).dbsize() for _, port in on_cluster.primaries()}
    assert all(count > 0 for count in held.values())
    assert sum(held.values()) == 30
    assert len({key_slot(key.encode()) for key in keys}) > 1
    assert state.mget(keys) == [key.upper().encode() for key in keys]  # not CROSSSLOT
    assert state.mget([keys[0], "kestrel:tests:cluster:absent"]) == [keys[0].upper().encode(), None]
    assert state.delete(*keys) == 30


def test_the_django_cache_api_works_across_slots(on_cluster):
    cache = caches["default"]
    values = {f"cluster-{n}": {"n": n} for n in range(20)}

    cache.set_many(values, timeout=60)

    assert cache.get("cluster-3") == {"n": 3}
    assert cache.get_many(list(values)) == values
    assert cache.delete_many(list(values))
    assert cache.get_many(list(values)) == {}


def test_a_pipeline_deletes_keys_of_one_slot_together(on_cluster):
    client = get_redis("cache")
    same_slot = ["kestrel:tests:{one}:a", "kestrel:tests:{one}:b"]
    client.set(same_slot[0], "a")
    client.set(same_slot[1], "b")

    pipe = client.pipeline(transaction=False)
    pipe.delete(*same_slot)
    pipe.get(same_slot[0])

    assert pipe.execute() == [2, None]


def test_a_pipeline_carries_scripts_and_publishes_to_subscribers_of_any_node(on_cluster):
    client = get_redis("cache")
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    keys = _keys_across_slots(6)
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe("kestrel:tests:cluster:channel")

    pipe = client.pipeline(transaction=False)
    assert script_queue(pipe, script, [([key], [n]) for n, key in enumerate(keys)]) == 6
    pipe.publish("kestrel:tests:cluster:channel", "hello")
    replies = pipe.execute()

    assert replies[0] == script.sha.encode()  # SCRIPT LOAD's reply, as on a single server
    assert replies[1:7] == list(range(6))  # each call ran on the node of its key, as EVAL
    assert [client.get(key) for key in keys] == [str(n).encode() for n in range(6)]
    deadline, message = time.monotonic() + 5, None
    while message is None and time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.1)
    subscriber.close()
    assert message is not None
    assert message["data"] == b"hello"


def _calls_on_primaries(client: RedisCluster) -> dict[str, int]:
    """Every primary's INFO commandstats, summed: what the servers ran, by command."""
    calls: dict[str, int] = {}
    for node in client.get_primaries():
        for name, stats in client.get_redis_connection(node).info("commandstats").items():
            calls[name] = calls.get(name, 0) + stats["calls"]
    return calls


def test_a_pipelines_scripts_are_routed_without_asking_a_node_for_their_keys(on_cluster):
    client = get_redis("cache")
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    before = _calls_on_primaries(client)

    pipe = client.pipeline(transaction=False)
    script_queue(pipe, script, [([key], []) for key in _keys_across_slots(20)])
    pipe.execute()

    ran = {name: n - before.get(name, 0) for name, n in _calls_on_primaries(client).items()}
    assert ran.get("cmdstat_eval") == 20
    assert ran.get("cmdstat_incr") == 20
    assert ran.get("cmdstat_command|getkeys", 0) == 0  # redis-py's pipeline would ask once per script


def _commands(role: str, command: str, family: str) -> float:
    metrics.flush()
    labels = {"role": role, "command": command, "family": family}
    return REGISTRY.get_sample_value("kestrel_redis_commands_total", labels) or 0.0


def test_command_metrics_count_cluster_commands_per_role(on_cluster):
    before = {
        "set": _commands("state", "SET", "tests:cluster"),
        "get": _commands("cache", "GET", "tests:cluster"),
        "pipeline": _commands("cache", "PIPELINE", "tests:cluster"),
        "mget": _commands("cache", "MGET", "tests:cluster"),
        "connect": _commands("cache", "CONNECT", "none"),
    }
    keys = _keys_across_slots(6)

    get_redis("state").set(keys[0], "x")
    get_redis("cache").get(keys[0])
    pipe = get_redis("cache").pipeline(transaction=False)
    for key in keys:
        pipe.set(key, "y")
    pipe.execute()
    get_redis("cache").mget(keys)  # across slots: one MGET per slot, in one pipeline per node

    assert _commands("state", "SET", "tests:cluster") == before["set"] + 1
    assert _commands("cache", "GET", "tests:cluster") == before["get"] + 1
    slots = len({key_slot(key.encode()) for key in keys})
    assert _commands("cache", "SET", "tests:cluster") >= 6  # the pipeline's commands, one each
    assert _commands("cache", "PIPELINE", "tests:cluster") == before["pipeline"]  # a pipeline is its commands
    assert _commands("cache", "MGET", "tests:cluster") == before["mget"] + slots
    assert _commands("cache", "CONNECT", "none") >= before["connect"]


def test_a_stopped_cluster_is_unavailable_without_opening_the_breaker(stopped):
    client = get_redis("cache")

    began = time.monotonic()
    with pytest.raises(ClusterUnavailable) as raised:
        client.get("kestrel:tests:cluster:one")

    assert time.monotonic() - began < 2  # refused connections fail fast
    assert is_unavailable(raised.value)
    assert not breaker("cache").is_open  # refusals do not open it: a restart answers them
    pipe = client.pipeline(transaction=False)
    script_queue(pipe, client.register_script("return 1"), [(["kestrel:tests:cluster:one"], [])])  # sends nothing
    with pytest.raises(ClusterUnavailable):
        pipe.execute()


def test_the_breaker_opens_when_every_node_hangs_and_closes_after(on_cluster, paused):
    client = get_redis("cache")  # its connections opened before the hang (on_cluster's FLUSHDB)

    began = time.monotonic()
    with pytest.raises((RedisTimeoutError, CircuitOpen)):
        client.get("kestrel:tests:cluster:one")
    first = time.monotonic() - began
    assert breaker("cache").is_open
    began = time.monotonic()
    with pytest.raises(CircuitOpen):
        client.get("kestrel:tests:cluster:two")
    second = time.monotonic() - began

    # One timeout, not one per node or per retry: redis-py's topology refresh fails fast too.
    assert first < 3 * TIMEOUT
    assert second < 0.05
    for server in on_cluster.servers.values():
        server.resume()
    deadline = time.monotonic() + BREAKER_COOLDOWN + 5
    while time.monotonic() < deadline:
        try:
            assert client.set("kestrel:tests:cluster:one", "back")
            break
        except (CircuitOpen, ClusterUnavailable):
            time.sleep(0.05)
    assert not breaker("cache").is_open
    assert client.get("kestrel:tests:cluster:one") == b"back"


def test_fail_open_reads_the_database_when_the_cache_cluster_is_down(db, make_user, stopped, caplog):
    from accounts.selectors import user_profiles

    ada = make_user(username="ada")
    with fail_open("tests.cluster_down", "cache read failed", log=logger) as outcome:
        get_redis("cache").get("kestrel:tests:cluster:one")

    with caplog.at_level(logging.WARNING):
        profiles = user_profiles(user_ids=[ada.pk])

    assert outcome.failed
    assert isinstance(outcome.error, ClusterUnavailable)
    assert [profile["username"] for profile in profiles] == ["ada"]  # from the database
    assert "Cache role unavailable reading" in caplog.text


def test_healthz_reports_a_cluster_role_up_and_down(client, db, on_cluster):
    up = client.get("/healthz")
    on_cluster.stop()
    try:
        down = client.get("/healthz")
    finally:
        on_cluster.start()

    assert up.status_code == 200
    assert up.json()["checks"]["redis_cache"]["ok"]
    assert up.json()["checks"]["redis_state"]["ok"]
    assert down.status_code == 503
    assert not down.json()["checks"]["redis_cache"]["ok"]
    assert "ClusterUnavailable" in down.json()["checks"]["redis_cache"]["error"]


def test_the_checks_reach_every_primary_and_warn_when_a_state_primary_can_evict(on_cluster):
    assert check_redis_roles() == []
    _, port = on_cluster.primaries()[1]
    on_cluster.client(port).config_set("maxmemory-policy", "allkeys-lru")
    try:
        messages = check_redis_roles()
    finally:
        on_cluster.client(port).config_set("maxmemory-policy", "noeviction")

    assert [message.id for message in messages] == ["kestrel.W001"]  # the state role; the cache may evict
    assert f"primary 127.0.0.1:{port}" in messages[0].msg
    assert "allkeys-lru" in messages[0].msg


def test_the_checks_report_a_cluster_that_cannot_be_reached(cluster_caches, stopped):
    with override_settings(CACHES=cluster_caches):
        messages = check_redis_roles()

    assert {message.id for message in messages} == {"kestrel.E001"}
    assert {"cache role" in message.msg or "state role" in message.msg for message in messages} == {True}


def test_a_dedicated_pool_of_a_cluster_role_is_of_the_node_serving_a_key(on_cluster):
    channel = "kestrel:tests:cluster:{ada}:live"
    with pytest.raises(ClusterUnsupported, match="state role is a Redis Cluster"):
        dedicated_pool("state")  # no one server to pool without a key

    pool = dedicated_pool("state", key=channel, client_name="kestrel-sse", health_check_interval=30)
    subscriber = redis_client(connection_pool=pool).pubsub(ignore_subscribe_messages=True)
    try:
        subscriber.ssubscribe(channel)
        assert subscriber.get_message(timeout=5) is None  # the confirmation, read and dropped
        connection = subscriber.connection
        assert connection is not None
        assert ("127.0.0.1", connection.port) == on_cluster.node_for_slot(key_slot(channel.encode()))
        # Apart from the role's pools, with the role's settings and the overrides.
        client = get_redis("state")
        assert all(node.redis_connection.connection_pool is not pool for node in client.get_nodes())
        assert connection.client_name == "kestrel-sse"
        assert connection.health_check_interval == 30
        assert connection.socket_timeout == connection.socket_connect_timeout == TIMEOUT
        assert connection.retry.breaker is breaker("state")
        assert client.spublish(channel, "hello") == 1
        message = subscriber.get_message(timeout=5)
    finally:
        subscriber.close()
    assert message is not None
    assert (message["type"], message["data"]) == ("smessage", b"hello")
    assert dedicated_pool("state", key=channel) is not pool  # one per call: the caller keeps it


def test_the_invalidation_bus_reaches_a_subscriber_from_every_node(on_cluster):
    received: list[dict] = []
    subscriber = InvalidationSubscriber(clear=lambda: None, on_message=received.append)
    subscriber.start()
    try:
        assert subscriber.listening.wait(5)
        channel = invalidation_channel()
        # PUBSUB NUMSUB counts a node's own subscribers: the one node the subscriber is on.
        [listening] = [
            port for _, port in on_cluster.primaries() if on_cluster.client(port).pubsub_numsub(channel)[0][1]
        ]
        others = [port for _, port in on_cluster.primaries() if port != listening]
        assert len(others) == 2

        for n, port in enumerate(others):
            # Its reply counts that node's subscribers only (none): the cluster bus carries it to the others.
            on_cluster.client(port).publish(channel, json.dumps({"type": "tests", "id": n}))
        pipe = get_redis("cache").pipeline(transaction=False)  # as core.cacheaside invalidates
        pipe.publish(channel, json.dumps({"type": "tests", "id": 2}))
        pipe.execute()

        deadline = time.monotonic() + 5
        while len(received) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        subscriber.stop()
    assert sorted(message["id"] for message in received) == [0, 1, 2]


def test_a_cluster_url_is_redacted_and_sentinels_with_a_cluster_are_refused():
    assert redact_url("redis+cluster://:pw@a:7000,b:7001/0") == "redis+cluster://:***@a:7000,b:7001/0"
    assert redact_url("redis+cluster://a:7000,b:7001") == "redis+cluster://a:7000,b:7001"
    with pytest.raises(ImproperlyConfigured, match="takes no Sentinels"):
        connection_pool_options(
            role="cache",
            connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT,
            max_connections=1,
            retries=0,
            sentinels=[("127.0.0.1", 26379)],
            cluster=True,
        )


def test_without_metrics_the_cluster_client_is_redis_pys_own(settings, cluster):
    from core.instrumentation import redis_cluster_client

    settings.KESTREL_REDIS_METRICS_ENABLED = False
    (host, port), *_ = cluster.seed_nodes
    client = redis_cluster_client(host=host, port=port)
    try:
        assert type(client) is KestrelCluster
    finally:
        client.close()


def _load_settings(**env: str) -> subprocess.CompletedProcess:
    """Load the settings in a new process from `env` (no REDIS_* inherited); nothing connects."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_")}
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; settings.CACHES"],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_cluster_url_with_sentinels_is_refused_at_start_up_naming_both_settings():
    result = _load_settings(
        REDIS_URL="redis://127.0.0.1:6390/0",
        REDIS_CACHE_URL="redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        REDIS_CACHE_SENTINELS="127.0.0.1:26390",
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: REDIS_CACHE_URL is a Redis Cluster and REDIS_CACHE_SENTINELS names Sentinels" in (
        result.stderr
    )


def test_a_cache_cluster_does_not_follow_the_state_role_s_sentinels():
    result = _load_settings(
        REDIS_URL="redis://kestrel-state/0",
        REDIS_SENTINELS="127.0.0.1:26390",
        REDIS_CACHE_URL="redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
    )

    assert result.returncode == 0, result.stderr


def test_the_state_role_s_cluster_is_no_cache_role(cluster_caches):
    caches_setting = copy.deepcopy(cluster_caches)
    caches_setting["default"]["LOCATION"] = caches_setting["sessions"]["LOCATION"]

    with override_settings(CACHES=caches_setting):
        messages = check_cache_role()

    assert [message.id for message in messages] == ["kestrel.E004"]
    assert "REDIS_CACHE_URL is not set" in messages[0].msg


def test_renaming_keys_to_the_tagged_grammar_is_refused_on_a_cluster(on_cluster):
    with pytest.raises(CommandError, match="rename the keys on its single server first"):
        call_command("redis_rename_keys")
