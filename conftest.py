"""Test session set-up: a private Redis server first, then Django settings.

Settings read REDIS_URL when they load, so the server must exist before Django is
configured; pytest-django finishes the set-up in its own (later) pytest_configure.
The tests never touch a Redis server they did not start.

With KESTREL_TEST_CLUSTER=1 (`make test-cluster`) the cache and state roles are each a
private Redis Cluster of three primaries and the queue role a private server of its own
(tests.cluster_session): the same suite, on the roles' cluster client (core.cluster).
"""

from __future__ import annotations

import os
import secrets
import tempfile

import pytest

from devstack.redis_server import RedisServer
from tests.cluster_session import ClusterSession

CLUSTER = os.environ.get("KESTREL_TEST_CLUSTER", "") == "1"


_server: RedisServer | ClusterSession | None = None

ROUND_TRIPS = (
    "counts one server's round trips; a cluster's differ where keys span slots (docs/design.md, "
    '"Hash tags"; tests/core/test_ratelimit.py checks the limiter\'s on a cluster)'
)

# Tests of a single server's client, pool or layout, skipped in a cluster session: what
# each checks has no meaning there, or tests/core/test_cluster_client.py checks it of the
# cluster client. By node id, then by the fixture that builds the single-server client.
SINGLE_SERVER_TESTS = {
    "tests/core/test_redis.py::test_each_role_has_one_pool_shared_by_raw_clients_and_the_cache_api": (
        "django-redis's one pool per URL: a cluster role's client keeps a pool per node"
    ),
    "tests/core/test_redis.py::test_the_roles_use_different_databases_in_development": (
        "database numbers: a cluster has database 0 only"
    ),
    "tests/core/test_redis.py::test_connections_have_timeouts_and_retry_with_backoff": (
        "a single server's pool arguments"
    ),
    "tests/core/test_redis_breaker.py::test_a_hung_server_costs_one_timeout_then_fails_fast_and_recovers": (
        "a client of the private single server"
    ),
    "tests/core/test_redis_breaker.py::test_a_refused_connection_is_retried_and_does_not_open_the_breaker": (
        "a client of the private single server"
    ),
    "tests/core/test_redis_breaker.py::test_every_connection_of_a_role_shares_the_role_s_one_breaker": (
        "a single server's pool"
    ),
    "tests/core/test_checks.py::test_errors_when_redis_cannot_be_reached_and_hides_the_password": (
        "swaps in a single server's URL under the role's options"
    ),
    "tests/core/test_cacheaside.py::test_a_message_published_by_another_process_drops_the_l1_entry": (
        "publishes on the private single server"
    ),
    "tests/core/test_queue_role.py::test_the_queue_role_is_the_state_roles_pool_and_breaker_by_default": (
        "the default layout: a cluster session gives the queue role a server of its own"
    ),
    "tests/core/test_queue_role.py::test_the_check_names_the_setting_when_redis_url_is_a_cluster": (
        "the default layout: a cluster session gives the queue role a server of its own"
    ),
    "tests/jobs/test_queue_server.py::test_unset_the_queue_role_keeps_everything_on_the_state_server": (
        "the default layout: a cluster session gives the queue role a server of its own"
    ),
    "tests/core/test_instrumentation.py::test_every_client_of_a_role_is_instrumented": (
        "a single server's client hook (a cluster role's is core.instrumentation.redis_cluster_client)"
    ),
    "tests/core/test_redis_down.py::test_healthz_names_both_redis_roles_when_redis_is_down": (
        "the default layout: a cluster session gives the queue role a server of its own"
    ),
    "tests/ops/test_health.py::test_healthz_is_200_when_redis_and_the_database_answer": (
        "the default layout: a cluster session gives the queue role a server of its own"
    ),
    "bench/tests/test_figures.py::test_a_count_tells_commands_sent_from_those_a_script_runs_and_counts_round_trips": (
        "a client of the private single server"
    ),
    "bench/tests/test_figures.py::test_a_count_includes_what_the_requests_left_to_a_background_flush": (
        "a client of the private single server"
    ),
    "tests/posts/test_write_round_trips.py::test_a_new_post_to_a_hundred_followers_costs_two_round_trips": (
        ROUND_TRIPS + " (the new post's invalidation goes apart from its author's MULTI)"
    ),
    "tests/feeds/test_lists_from_cache.py::test_a_warm_feed_of_fifty_posts_queries_no_post_and_costs_two_round_trips": (
        ROUND_TRIPS
    ),
    "tests/feeds/test_lists_from_cache.py::test_with_the_l1_listening_a_warm_feed_reads_no_post_from_redis": (
        ROUND_TRIPS
    ),
    "tests/core/test_cacheaside_many.py::test_a_warm_list_is_one_mget_and_no_load": ROUND_TRIPS,
    "tests/core/test_cacheaside_many.py::"
    "test_a_cold_list_loads_its_misses_in_one_call_and_stores_them_in_one_pipeline": (ROUND_TRIPS),
    "tests/core/test_cacheaside_many.py::test_a_family_without_single_flight_stores_without_leases": ROUND_TRIPS,
    "tests/core/test_instrumentation.py::test_figures_from_several_processes_add_up_in_multiprocess_mode": (
        "a client of the private single server"
    ),
    "tests/accounts/test_revocation.py::test_the_limiters_verdict_on_the_same_token_is_reused_without_a_round_trip": (
        ROUND_TRIPS
    ),
    "tests/accounts/test_session_round_trips.py::"
    "test_with_rate_limiting_off_a_session_request_costs_its_session_read_alone": (
        ROUND_TRIPS + " (the session and its user's epoch are in two slots)"
    ),
    "tests/accounts/test_tokens.py::test_without_the_rate_limiter_the_denylist_check_is_still_one_round_trip": (
        ROUND_TRIPS
    ),
}
SINGLE_SERVER_MODULES = {
    "tests/ops/test_redis_rename_keys.py": (
        "keys before hash tags only ever lived on one server; on a cluster the command refuses "
        "(tests/core/test_cluster_client.py)"
    ),
}
SINGLE_SERVER_FIXTURES = {
    "instrumented_client": "a single-server client (InstrumentedRedis) of the role's URL",
    "instrumented_cache": "a single-server client (InstrumentedRedis) of the role's URL",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not CLUSTER:
        return
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        reason = (
            SINGLE_SERVER_TESTS.get(item.nodeid)
            or SINGLE_SERVER_MODULES.get(item.nodeid.partition("::")[0])
            or next((why for name, why in SINGLE_SERVER_FIXTURES.items() if name in fixtures), None)
        )
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"not in a cluster session: {reason}"))


@pytest.fixture(scope="session")
def redis_server() -> RedisServer | ClusterSession:
    """The session's private Redis server (started in pytest_configure), for tests/ and bench/tests/;
    in a cluster session, its ClusterSession."""
    assert _server is not None, "the private Redis server starts in pytest_configure"
    return _server


def _role_urls() -> dict[str, str]:
    """Start the session's servers; the environment that points the roles at them."""
    global _server
    if CLUSTER:
        session = ClusterSession().start()
        _server = session
        return {
            "REDIS_URL": session.state.url,
            "REDIS_CACHE_URL": session.cache.url,
            "REDIS_QUEUE_URL": session.queue.url,
        }
    server = RedisServer(extra_config={"maxmemory-policy": "noeviction"}).start()
    _server = server
    return {"REDIS_URL": f"{server.url}/0", "REDIS_CACHE_URL": f"{server.url}/1"}


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("help") or config.getoption("version"):
        return
    urls = _role_urls()
    var_dir = tempfile.mkdtemp(prefix="kestrel-test-var-")
    os.makedirs(os.path.join(var_dir, "static"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **urls,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "SECURE_SSL_REDIRECT": "0",
            "KESTREL_VAR_DIR": var_dir,
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        }
    )
    from django.conf import settings

    if settings.CACHES["sessions"]["LOCATION"] != urls["REDIS_URL"]:
        pytest.exit("Django settings were loaded before the private Redis started (is DJANGO_SETTINGS_MODULE set?)")
    # No thread sending views in the background (posts.counters): tests send them with
    # flush_views(). A setting, not the environment, which live stacks would inherit.
    settings.KESTREL_VIEW_FLUSH_INTERVAL = 0
    # Fast hashing: the suite creates many users; the hasher is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # No collectstatic in tests: plain static storage instead of the manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        from core.cacheaside import l1

        l1().stop()  # before the server goes, or its subscriber logs the lost connection
        _server.cleanup()
