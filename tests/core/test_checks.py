"""The system checks that guard the Redis roles."""

from __future__ import annotations

import copy
import re

import pytest
from django.conf import settings
from django.test import override_settings

from core.checks import check_redis_roles
from devstack.processes import free_port
from tests.cluster_session import ClusterSession


@pytest.fixture
def state_policy(state_redis):
    """Set the private server's maxmemory-policy for one test, then restore it."""
    before = state_redis.config_get("maxmemory-policy")["maxmemory-policy"]

    def set_policy(policy: str) -> None:
        state_redis.config_set("maxmemory-policy", policy)

    yield set_policy
    state_redis.config_set("maxmemory-policy", before)


def test_no_messages_when_both_roles_answer_and_state_cannot_evict():
    assert check_redis_roles() == []


def test_warns_when_the_state_role_can_evict(state_policy):
    state_policy("allkeys-lru")

    messages = check_redis_roles()

    assert [m.id for m in messages] == ["kestrel.W001"]
    assert "allkeys-lru" in messages[0].msg


def test_errors_when_redis_cannot_be_reached_and_hides_the_password():
    caches = copy.deepcopy(settings.CACHES)
    caches["sessions"]["LOCATION"] = f"redis://:s3cret@127.0.0.1:{free_port()}/0"

    with override_settings(CACHES=caches):
        messages = check_redis_roles()

    assert [m.id for m in messages] == ["kestrel.E001"]
    assert "state role" in messages[0].msg
    assert ":***@127.0.0.1" in messages[0].msg
    assert "s3cret" not in messages[0].msg


def test_warns_once_for_each_primary_of_a_state_role_cluster_that_can_evict(redis_server):
    """W001 reads every primary of a cluster role (each names its own); the cache role's
    nodes evict in a cluster session, as a cache should, and are not warned about."""
    if not isinstance(redis_server, ClusterSession):
        pytest.skip("a cluster session's test (KESTREL_TEST_CLUSTER=1, make test-cluster)")
    primaries = redis_server.state.primaries()
    for _, port in primaries:
        redis_server.state.client(port).config_set("maxmemory-policy", "volatile-lru")
    try:
        messages = check_redis_roles()
    finally:
        for _, port in primaries:
            redis_server.state.client(port).config_set("maxmemory-policy", "noeviction")

    assert [message.id for message in messages] == ["kestrel.W001"] * len(primaries)
    named = sorted(re.search(r"\(primary ([\d.]+:\d+)\)", message.msg)[1] for message in messages)
    assert named == sorted(f"{host}:{port}" for host, port in primaries)
    assert all("state role" in message.msg and "'volatile-lru'" in message.msg for message in messages)
