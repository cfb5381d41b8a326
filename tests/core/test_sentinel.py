"""Redis Sentinel: Kestrel's clients follow a failover of the state role without a restart.

A real primary, a real replica and a real Sentinel; the primary is SIGKILLed and the
Sentinel promotes the replica. Sessions, the raw state client and RQ all run on the
Sentinel-built settings (core.redis.connection_pool_options with `sentinels`), as
production configures them through REDIS_SENTINELS.
"""

from __future__ import annotations

import copy
import time

import django_rq
import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from django_redis.pool import ConnectionFactory
from redis import Redis
from redis.exceptions import RedisError

from accounts.sessions import SessionStore
from core.redis import connection_pool_options, dedicated_pool, get_redis
from devstack.redis_server import RedisServer, SentinelServer

pytestmark = pytest.mark.slow

SERVICE = "kestrel-state"
FAILOVER_DEADLINE = 20.0  # seconds; Sentinel here decides in ~1 s (down-after 500 ms)


def _wait_for(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except RedisError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def sentinel_stack():
    primary = RedisServer(extra_config={"maxmemory-policy": "noeviction", "appendonly": "yes"})
    replica = RedisServer(extra_config={"maxmemory-policy": "noeviction", "appendonly": "yes"})
    sentinel = SentinelServer({SERVICE: primary}, down_after_ms=500, failover_timeout_ms=2000)
    try:
        primary.start()
        replica.extra_config["replicaof"] = f"{primary.host} {primary.port}"
        replica.start()
        replica_client = Redis(port=replica.port)
        _wait_for(
            lambda: replica_client.info("replication")["master_link_status"] == "up",
            timeout=10,
            what="the replica to sync",
        )
        sentinel.start()
        sentinel_client = Redis(port=sentinel.port)
        # A Sentinel fails over only to replicas it has discovered (through the primary's INFO).
        _wait_for(lambda: sentinel_client.sentinel_slaves(SERVICE), timeout=15, what="the Sentinel to see the replica")
        yield primary, replica, sentinel
    finally:
        for server in (sentinel, replica, primary):
            server.cleanup()


def _sentinel_caches(sentinel: SentinelServer) -> dict:
    """settings.CACHES with both roles on the Sentinel service (DB 0 state, DB 1 cache)."""
    configured = copy.deepcopy(settings.CACHES)
    for alias, role, db in (("sessions", "state", 0), ("default", "cache", 1)):
        configured[alias]["LOCATION"] = f"redis://{SERVICE}/{db}"
        configured[alias]["OPTIONS"] = connection_pool_options(
            role=role,
            connect_timeout=0.5,
            socket_timeout=0.5,
            max_connections=20,
            retries=3,
            sentinels=[(sentinel.host, sentinel.port)],
        )
    return configured


@pytest.fixture
def on_sentinel(sentinel_stack):
    primary, replica, sentinel = sentinel_stack
    with override_settings(CACHES=_sentinel_caches(sentinel)):
        try:
            yield primary, replica, sentinel
        finally:
            # django-redis keeps pools per URL for the process's life; these point at
            # servers that are about to go away.
            for url in [url for url in ConnectionFactory._pools if SERVICE in url]:
                ConnectionFactory._pools.pop(url).disconnect()
            caches["sessions"].close()
            caches["default"].close()


def test_clients_follow_a_failover_of_the_state_role(on_sentinel):
    primary, replica, sentinel = on_sentinel
    state = get_redis("state")
    session = SessionStore()
    session["kept"] = "across the failover"
    session.create()
    queue = django_rq.get_queue("default")
    queue.enqueue("builtins.len", "kestrel", job_id="before-failover")
    state.set("kestrel:test:written", "before")
    assert state.connection_pool.get_master_address() == (primary.host, primary.port)
    # Replication is asynchronous: wait until the replica has everything acknowledged so far.
    assert state.wait(1, 2000) == 1

    primary.stop(kill=True)
    killed_at = time.monotonic()
    recovered_after = None
    while time.monotonic() - killed_at < FAILOVER_DEADLINE:
        try:
            state.set("kestrel:test:written", "after")
        except RedisError:
            time.sleep(0.05)
            continue
        recovered_after = time.monotonic() - killed_at
        break

    assert recovered_after is not None, f"no write succeeded within {FAILOVER_DEADLINE:.0f} s of the primary's death"
    assert state.connection_pool.get_master_address() == (replica.host, replica.port)
    assert Redis(port=replica.port).info("replication")["role"] == "master"
    assert SessionStore(session.session_key).load() == {"kept": "across the failover"}
    assert "before-failover" in django_rq.get_queue("default").job_ids
    assert Redis(port=replica.port).get("kestrel:test:written") == b"after"


def test_subscriptions_follow_the_sentinel_too(on_sentinel):
    primary, replica, sentinel = on_sentinel
    pool = dedicated_pool("state", client_name="kestrel-test")
    try:
        client = Redis(connection_pool=pool)
        assert client.ping()
        assert pool.get_master_address() == (primary.host, primary.port)
    finally:
        pool.disconnect()
