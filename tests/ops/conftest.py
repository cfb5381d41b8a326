"""The ops tests' fixtures: which session this is (every server of a role: role_config
and role_servers in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.cluster_session import ClusterSession


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
