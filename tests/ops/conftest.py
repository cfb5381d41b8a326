"""The ops tests' fixtures: which session this is, and every server of a role.

In a cluster session (KESTREL_TEST_CLUSTER=1, `make test-cluster`) the cache and state
roles are each a cluster of three primaries (tests.cluster_session), and a CONFIG SET
or SLOWLOG RESET through a role's client reaches one node: these fixtures ask each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from redis import Redis
from redis.cluster import RedisCluster

from core.redis import Role, get_redis
from tests.cluster_session import ClusterSession


def role_servers(role: Role) -> list[Redis]:
    """A plain client of each server of the role: its one server, or every node of its cluster."""
    client = get_redis(role)
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


@pytest.fixture
def single_server(redis_server):
    """Skip the test in a cluster session: what it checks is the single-server layout
    (both roles one server, two databases; a single server's URL or client)."""
    if isinstance(redis_server, ClusterSession):
        pytest.skip("the single-server layout: not in a cluster session")


@pytest.fixture
def cluster_session(redis_server) -> ClusterSession:
    """The session's clusters; the test is skipped on one server (KESTREL_TEST_CLUSTER=1 runs it)."""
    if not isinstance(redis_server, ClusterSession):
        pytest.skip("a cluster session's test (KESTREL_TEST_CLUSTER=1, make test-cluster)")
    return redis_server


@pytest.fixture
def role_config() -> Iterator[Callable[[Role, str, str], None]]:
    """config(role, name, value): CONFIG SET on every server of the role for one test, put
    back afterwards, and every SLOWLOG of the role emptied."""
    saved: list[tuple[Redis, str, str]] = []
    roles: set[Role] = set()

    def config(role: Role, name: str, value: str) -> None:
        roles.add(role)
        for server in role_servers(role):
            saved.append((server, name, server.config_get(name)[name]))
            server.config_set(name, value)

    yield config
    for server, name, value in reversed(saved):
        server.config_set(name, value)
    for role in roles:
        for server in role_servers(role):
            server.slowlog_reset()
