"""The private Redis Cluster that the cluster tests, benchmarks and `make run` start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from core.cluster_url import parse_cluster_url
from devstack.processes import session_members
from devstack.redis_cluster import TOTAL_SLOTS, LocalCluster
from devstack.redis_server import answers_ping


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(primaries=3) as cluster:
        yield cluster


def cluster_client(cluster: LocalCluster) -> RedisCluster:
    """A redis-py cluster client built from the cluster's URL, as Kestrel will build one."""
    nodes, password, ssl = parse_cluster_url(cluster.url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        password=password,
        ssl=ssl,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=2,
    )


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_three_primaries_on_loopback_serve_every_slot(cluster):
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert cluster.replicas() == []
    assert parse_cluster_url(cluster.url).nodes == primaries == cluster.seed_nodes

    for host, port in primaries:
        node = cluster.client(port)
        info = dict(line.split(":", 1) for line in node.execute_command("CLUSTER", "INFO").split())
        assert (info["cluster_state"], info["cluster_slots_ok"], info["cluster_known_nodes"]) == ("ok", "16384", "3")
        assert node.config_get("bind")["bind"] == host == "127.0.0.1"
        assert node.config_get("appendonly")["appendonly"] == "yes"

    covered = sorted(
        (first, last, port)
        for first, last, (_, port, *_), *_ in cluster.client(primaries[0][1]).execute_command("CLUSTER", "SLOTS")
    )
    assert [(first, last) for first, last, _ in covered] == [(0, 5460), (5461, 10921), (10922, TOTAL_SLOTS - 1)]
    assert {("127.0.0.1", port) for _, _, port in covered} == set(primaries)
    assert all(cluster.node_for_slot(last) == ("127.0.0.1", port) for _, last, port in covered)


def test_a_cluster_client_from_the_seed_nodes_reads_and_writes_on_every_primary(cluster):
    client = cluster_client(cluster)
    keys = [f"kestrel:test:cluster:{n}" for n in range(30)]
    try:
        for key in keys:
            client.set(key, key.upper())
        assert [client.get(key) for key in keys] == [key.upper() for key in keys]
    finally:
        client.close()

    # Each key is on the primary that serves its slot, and every primary holds some.
    owners = {key: cluster.node_for_slot(key_slot(key.encode())) for key in keys}
    assert set(owners.values()) == set(cluster.primaries())
    for key, (_, port) in owners.items():
        assert cluster.client(port).get(key) == key.upper()


@pytest.mark.parametrize(
    "key",
    [
        "kestrel:posts:post:42",
        "{kestrel:user:7}:timeline",
        "kestrel:{user:7}:sessions",
        "{}kestrel:empty-tag",  # an empty tag hashes the whole key
        "kestrel:{unclosed",
        "kestrel:{a}{b}",  # the first tag counts
        "kestrel:ünïcode",
    ],
)
def test_cluster_keyslot_agrees_with_redis_py(cluster, key):
    node = cluster.client(cluster.primaries()[0][1])

    assert node.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key.encode())


def test_a_hash_tag_puts_keys_in_one_slot():
    assert (
        key_slot(b"{kestrel:user:7}:timeline") == key_slot(b"kestrel:{kestrel:user:7}") == key_slot(b"kestrel:user:7")
    )
    assert key_slot(b"kestrel:user:7:timeline") != key_slot(b"kestrel:user:7:sessions")


def test_multi_key_commands_need_one_slot(cluster):
    first, second = "kestrel:test:a", "kestrel:test:b"
    assert key_slot(first.encode()) != key_slot(second.encode())
    _, port = cluster.node_for_slot(key_slot(first.encode()))
    client = cluster_client(cluster)
    try:
        # The server refuses keys of two slots; redis-py refuses them before sending.
        with pytest.raises(ClusterCrossSlotError):  # the server's CROSSSLOT
            cluster.client(port).mset({first: "1", second: "2"})
        with pytest.raises(RedisClusterException, match="same key slot"):
            client.mset({first: "1", second: "2"})

        tagged = {"{kestrel:test}:a": "1", "{kestrel:test}:b": "2"}
        assert client.mset(tagged)
        assert client.mget(list(tagged)) == ["1", "2"]
    finally:
        client.close()


def test_extra_config_reaches_every_node():
    """The cache role's cluster: a memory limit, LRU eviction, no AOF."""
    config = {"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru", "appendonly": "no"}
    with LocalCluster(primaries=2, replicas_per_primary=1, extra_config=config) as cluster:
        assert len(cluster.primaries()) == len(cluster.replicas()) == 2
        for _, port in cluster.seed_nodes:
            node = cluster.client(port)
            assert node.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
            assert node.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
            assert node.config_get("appendonly")["appendonly"] == "no"


def test_stop_leaves_no_process_behind():
    cluster = LocalCluster(primaries=3, replicas_per_primary=1).start()
    pids, ports = cluster.pids(), [port for _, port in cluster.seed_nodes]
    assert len(pids) == len(ports) == 6

    cluster.cleanup()

    for pid in pids:
        # Each node led a session of its own: nothing of it (nor a fork) is left.
        assert session_members(pid) == []
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(answers_ping(port) for port in ports)
    assert not os.path.exists(cluster._dir)


@pytest.mark.slow
def test_a_cluster_with_a_data_dir_restarts_with_its_ports_slots_and_data(tmp_path):
    written = {f"kestrel:test:kept:{n}": str(n) for n in range(10)}
    with LocalCluster(primaries=3, data_dir=tmp_path / "cluster") as cluster:
        seeds = cluster.seed_nodes
        client = cluster_client(cluster)
        for key, value in written.items():
            client.set(key, value)
        client.close()
    assert not any(answers_ping(port) for _, port in seeds)

    with LocalCluster(primaries=3, data_dir=tmp_path / "cluster") as again:
        assert again.seed_nodes == seeds
        assert len(again.primaries()) == 3
        client = cluster_client(again)
        assert {key: client.get(key) for key in written} == written
        client.close()


@pytest.mark.slow
def test_the_nodes_die_with_their_parent_even_on_sigkill():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import time
                from devstack.redis_cluster import LocalCluster
                cluster = LocalCluster(primaries=3).start()
                print(*(port for _, port in cluster.seed_nodes), flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ports = [int(port) for port in parent.stdout.readline().split()]
        assert len(ports) == 3
        assert all(answers_ping(port) for port in ports)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        parent.stdout.close()

    wait_until(lambda: not any(answers_ping(port) for port in ports), 10, "the nodes to exit with their parent")


@pytest.mark.slow
def test_a_replica_takes_over_a_killed_primary_and_writes_resume():
    with LocalCluster(primaries=3, replicas_per_primary=1, node_timeout_ms=1000) as cluster:
        slot = key_slot(b"kestrel:failover")
        victim = cluster.node_for_slot(slot)
        replicas = cluster.replicas()
        client = cluster_client(cluster)
        attempts: list[tuple[float, bool]] = []  # (when, acknowledged), in order
        stop = threading.Event()

        def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    client.set("{kestrel:failover}:last", n)
                    attempts.append((time.monotonic(), True))
                except (redis.RedisError, RedisClusterException):
                    attempts.append((time.monotonic(), False))
                    time.sleep(0.01)  # no busy loop on a refusing cluster

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            wait_until(lambda: sum(ok for _, ok in attempts) >= 20, 10, "writes before the kill")
            cluster.kill_primary(victim)
            killed_at = time.monotonic()
            promoted_after = cluster.wait_for_failover(victim)
            wait_until(lambda: any(ok and when > killed_at for when, ok in attempts), 20, "a write after the failover")
        finally:
            stop.set()
            writer.join(timeout=10)

        after_kill = [(when, ok) for when, ok in attempts if when > killed_at]
        failed = [when for when, ok in after_kill if not ok]
        assert failed, "writes to the killed primary's slots fail until a replica takes them"
        recovered_after = next(when for when, ok in after_kill if ok and when > failed[0]) - killed_at
        print(
            f"\nfailover: primary SIGKILLed, replica promoted after {promoted_after:.2f} s, "
            f"writes acknowledged again after {recovered_after:.2f} s ({len(failed)} writes failed meanwhile)"
        )
        new_primary = cluster.node_for_slot(slot)
        assert new_primary in replicas
        assert victim not in cluster.primaries()
        assert len(cluster.primaries()) == 3
        last = client.get("{kestrel:failover}:last")
        assert cluster.client(new_primary[1]).get("{kestrel:failover}:last") == last
        client.close()
