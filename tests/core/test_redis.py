"""Clients per role: shared pools, timeouts, retries, and a cache clear that spares state."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django_rq import get_queue

from core.redis import connection_pool_options, get_redis, parse_sentinels, redact_url


def test_each_role_has_one_pool_shared_by_raw_clients_and_the_cache_api():
    assert get_redis("state").connection_pool is caches["sessions"].client.get_client().connection_pool
    assert get_redis("cache").connection_pool is caches["default"].client.get_client().connection_pool
    assert get_redis("state").connection_pool is not get_redis("cache").connection_pool


def test_the_roles_use_different_databases_in_development():
    state = get_redis("state").connection_pool.connection_kwargs["db"]
    cache = get_redis("cache").connection_pool.connection_kwargs["db"]

    assert (state, cache) == (0, 1)


def test_connections_have_timeouts_and_retry_with_backoff():
    kwargs = get_redis("state").connection_pool.connection_kwargs

    assert 0 < kwargs["socket_timeout"] <= 5
    assert 0 < kwargs["socket_connect_timeout"] <= 5
    assert kwargs["retry"].get_retries() >= 1
    assert kwargs["client_name"] == "kestrel-state"


def test_rq_queues_live_on_the_queue_role():
    for name in ("periodic", "default", "email", "reports"):
        assert get_queue(name).connection.connection_pool is get_redis("queue").connection_pool


def test_clearing_the_cache_never_touches_state_or_other_prefixes(state_redis):
    cache = get_redis("cache")
    cache.set("kestrel:posts:post:1", "cached")
    cache.set("another-site:posts:post:1", "theirs")
    state_redis.set("kestrel:accounts:session:abc", "{}")

    caches["default"].clear()

    assert not cache.exists("kestrel:posts:post:1")
    assert cache.get("another-site:posts:post:1") == b"theirs"
    assert state_redis.exists("kestrel:accounts:session:abc")


def test_redact_url_hides_only_the_password():
    assert redact_url("redis://user:pw@host:6380/2") == "redis://user:***@host:6380/2"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_sentinel_addresses_default_to_port_26379():
    assert parse_sentinels(["10.0.0.5:26380", "sentinel-b", " sentinel-c:26379 "]) == [
        ("10.0.0.5", 26380),
        ("sentinel-b", 26379),
        ("sentinel-c", 26379),
    ]


@pytest.mark.parametrize("address", ["", ":26379", "host:", "host:0", "host:70000", "host:port"])
def test_a_malformed_sentinel_address_is_refused(address):
    with pytest.raises(ValueError, match="is not host:port"):
        parse_sentinels([address])


def test_sentinel_options_use_sentinel_managed_connections():
    options = connection_pool_options(
        role="state", connect_timeout=1.0, socket_timeout=2.0, max_connections=10, retries=3, sentinels=[("s1", 26379)]
    )

    assert options["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    assert options["CONNECTION_POOL_CLASS"] == "core.instrumentation.InstrumentedSentinelConnectionPool"
    assert options["SENTINELS"] == [("s1", 26379)]
    assert "timeout" not in options["CONNECTION_POOL_KWARGS"]  # not a Sentinel pool's argument
    assert options["CONNECTION_POOL_KWARGS"]["retry_on_error"]
