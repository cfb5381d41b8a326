"""The system checks that guard the Redis roles."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings
from django.test import override_settings

from core.checks import check_redis_roles
from devstack.processes import free_port


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
