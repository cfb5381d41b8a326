from __future__ import annotations

import pytest

from conftest import private_redis
from core.redis import get_redis
from core.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's private Redis server (started by the root conftest)."""
    return private_redis()


@pytest.fixture(autouse=True)
def _clean_redis(redis_server: RedisServer):
    """Every test starts and ends with both roles empty (as rq's own tests do)."""
    if not redis_server.is_running():
        redis_server.start()
    for role in ("state", "cache"):
        get_redis(role).flushdb()
    yield
    if redis_server.is_running():
        for role in ("state", "cache"):
            get_redis(role).flushdb()


@pytest.fixture
def redis_down(redis_server: RedisServer):
    """Really stop the private Redis server for one test, and start it again after."""
    redis_server.stop()
    try:
        yield redis_server
    finally:
        redis_server.start()


@pytest.fixture
def state_redis():
    return get_redis("state")


@pytest.fixture
def make_user(db):
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
