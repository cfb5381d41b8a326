"""The Redis roles' circuit breaker: a hung server costs one timeout, then calls fail fast."""

from __future__ import annotations

import threading
import time

import pytest
from redis import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.redis import (
    BREAKER_COOLDOWN,
    Breaker,
    CircuitOpen,
    breaker,
    connection_pool_options,
    get_redis,
    is_unavailable,
)

TIMEOUT = 0.2  # seconds: the test client's connect and socket timeouts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def in_another_thread(call):
    """What `call` raised (or None) when run by a thread other than the test's."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


def test_after_a_timeout_calls_fail_fast_until_the_cooldown_then_one_probes():
    clock = Clock()
    breaker = Breaker("state", cooldown=1.0, probe_window=3.0, clock=clock)
    breaker.admit()  # closed: everyone goes

    breaker.timed_out()
    with pytest.raises(CircuitOpen):
        breaker.admit()
    assert is_unavailable(CircuitOpen("x"))  # callers' failure policies apply unchanged

    clock.now += 1.0
    breaker.admit()  # this thread probes
    breaker.admit()  # and its own further calls go too
    assert isinstance(in_another_thread(breaker.admit), CircuitOpen)

    breaker.answered()
    assert not breaker.is_open
    assert in_another_thread(breaker.admit) is None


def test_a_probe_that_proves_nothing_hands_over_to_the_next_call():
    clock = Clock()
    breaker = Breaker("cache", cooldown=1.0, probe_window=3.0, clock=clock)
    breaker.timed_out()
    clock.now += 1.0
    breaker.admit()

    breaker.inconclusive()  # e.g. a GET of a missing key: None, which an idle connect also returns

    assert in_another_thread(breaker.admit) is None
    assert breaker.is_open


def test_a_silent_probe_loses_its_turn_after_its_window():
    clock = Clock()
    breaker = Breaker("state", cooldown=1.0, probe_window=3.0, clock=clock)
    breaker.timed_out()
    clock.now += 1.0
    breaker.admit()

    clock.now += 2.9
    assert isinstance(in_another_thread(breaker.admit), CircuitOpen)
    clock.now += 0.1
    assert in_another_thread(breaker.admit) is None


def test_a_timed_out_probe_opens_the_breaker_again():
    clock = Clock()
    breaker = Breaker("state", cooldown=1.0, probe_window=3.0, clock=clock)
    breaker.timed_out()
    clock.now += 1.0
    breaker.admit()

    breaker.timed_out()

    with pytest.raises(CircuitOpen):
        breaker.admit()


@pytest.fixture
def client(redis_server):
    """A client of the private server with the state role's options, short timeouts, its own breaker."""
    options = connection_pool_options(
        role="state", connect_timeout=TIMEOUT, socket_timeout=TIMEOUT, max_connections=4, retries=3
    )
    pool = BlockingConnectionPool.from_url(
        redis_server.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, **options["CONNECTION_POOL_KWARGS"]
    )
    client = Redis(connection_pool=pool)
    client.ping()
    yield client
    pool.disconnect()


def _breaker(client: Redis) -> Breaker:
    return client.connection_pool.connection_kwargs["retry"].breaker


def test_a_hung_server_costs_one_timeout_then_fails_fast_and_recovers(client, redis_server):
    redis_server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            client.get("kestrel:test:key")
        first = time.monotonic() - began

        began = time.monotonic()
        with pytest.raises(CircuitOpen):
            client.get("kestrel:test:key")
        second = time.monotonic() - began
    finally:
        redis_server.resume()

    assert first < 2 * TIMEOUT  # one timeout, not one per retry
    assert second < 0.05
    deadline = time.monotonic() + BREAKER_COOLDOWN + 2
    while time.monotonic() < deadline:
        try:
            assert client.set("kestrel:test:key", "back")
            break
        except CircuitOpen:
            time.sleep(0.05)
    assert not _breaker(client).is_open
    assert client.get("kestrel:test:key") == b"back"


def test_a_refused_connection_is_retried_and_does_not_open_the_breaker(client, redis_down):
    with pytest.raises(RedisConnectionError) as raised:
        client.ping()

    assert not isinstance(raised.value, CircuitOpen)
    assert not _breaker(client).is_open


def test_every_connection_of_a_role_shares_the_role_s_one_breaker():
    """redis-py gives each connection a deep copy of the pool's Retry: the copies must
    still share one Breaker, or a timeout on one connection would not spare the others."""
    pool = get_redis("cache").connection_pool
    first, second = pool.get_connection(), pool.get_connection()
    try:
        assert first.retry is not second.retry
        assert first.retry.breaker is second.retry.breaker is breaker("cache")
    finally:
        pool.release(first)
        pool.release(second)
