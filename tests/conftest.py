from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from redis import Redis

from core import batching, cacheaside, metrics
from core.redis import Role, breaker, get_redis, reported_roles
from devstack.redis_server import RedisServer
from tests.clients import role_servers
from tests.cluster_session import ClusterSession

# redis_server, the session's private Redis server: the root conftest.py.


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: RedisServer | ClusterSession):
    """Every test starts and ends with every role empty (as rq's own tests do), and
    with this process's L1, counters and buffered views empty: ids repeat across
    rolled-back tests. The queue role is the state role's database, except in a cluster
    session (a server of its own); on a cluster, FLUSHDB goes to every primary."""
    if not redis_server.is_running():
        redis_server.start()
    for role in reported_roles():
        breaker(role).reset()  # a test that hung the server leaves it open for a moment
        get_redis(role).flushdb()
    cacheaside.l1().clear()
    batching.clear_all()
    metrics.reset()
    yield
    cacheaside.l1().clear()
    batching.clear_all()
    if redis_server.is_running():
        for role in reported_roles():
            breaker(role).reset()
            get_redis(role).flushdb()


@pytest.fixture
def redis_down(redis_server: RedisServer | ClusterSession):
    """Really stop the private Redis server (in a cluster session, every node and the queue
    server) for one test, and start it again after."""
    redis_server.stop()
    try:
        yield redis_server
    finally:
        redis_server.start()


@pytest.fixture
def redis_paused(redis_server: RedisServer | ClusterSession):
    """Freeze the private Redis server (in a cluster session, every node and the queue server)
    with SIGSTOP for one test: connections hang, data stays."""
    redis_server.pause()
    try:
        yield redis_server
    finally:
        redis_server.resume()


@pytest.fixture
def listening_l1():
    """This process's L1, once its invalidation subscriber listens (else it is bypassed)."""
    assert cacheaside.l1().wait_until_listening(10)
    return cacheaside.l1()


@pytest.fixture
def cache_redis():
    return get_redis("cache")


@pytest.fixture
def state_redis():
    return get_redis("state")


@pytest.fixture
def queue_redis():
    return get_redis("queue")


@pytest.fixture
def make_user(db):
    """make_user(email=, username=, password=, **extra): a new person through user_create
    (as a sign-up makes one), person<n>@example.com and password a-Strong-pass-42 unless given."""
    from accounts.services import user_create

    counter = iter(range(1, 10_000))

    def make(*, email: str | None = None, username: str | None = None, password: str = "a-Strong-pass-42", **extra):
        n = next(counter)
        return user_create(
            email=email or f"person{n}@example.com",
            username=username or f"person{n}",
            password=password,
            **extra,
        )

    return make


@pytest.fixture
def run_jobs():
    """Run what is queued on the named queues, in this process (a SimpleWorker, burst).

    On the queue role's server, with a connection of its own: RQ raises its socket
    timeout on the pool it is given, which would change the role's shared pool for
    later tests.
    """
    from django_rq import get_queue
    from redis import Redis
    from rq import SimpleWorker

    from core.redis import role_url

    def run(*names: str) -> None:
        connection = Redis.from_url(role_url("queue"))
        try:
            queues = [get_queue(name, connection=connection) for name in names]
            SimpleWorker(queues, connection=connection).work(burst=True)
        finally:
            connection.close()

    return run


# Two people most tests need: Ada writes, Bob reads, follows and likes.


@pytest.fixture
def ada(make_user):
    """ada@example.com, handle "ada", the default password; not staff."""
    return make_user(email="ada@example.com", username="ada")


@pytest.fixture
def bob(make_user):
    """bob@example.com, handle "bob", the default password; not staff."""
    return make_user(email="bob@example.com", username="bob")


def _logged_in(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def as_ada(ada):
    """An API client with Ada's session."""
    return _logged_in(ada)


@pytest.fixture
def as_bob(bob):
    """An API client with Bob's session."""
    return _logged_in(bob)


@pytest.fixture
def role_config() -> Iterator[Callable[[Role, str, str], None]]:
    """config(role, name, value): CONFIG SET on every server of the role for one test (a
    cluster role's CONFIG SET through its client reaches one node), put back afterwards,
    and every SLOWLOG of the role emptied."""
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
