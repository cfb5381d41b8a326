"""Redis clients per role: the one place Kestrel gets a connection.

Two roles, two failure policies (DESIGN.md, "Processes and services"):

- ``state``: sessions, denylists, rate limits, locks, counters, streams, RQ. Must not
  evict; callers treat its errors as errors.
- ``cache``: evictable copies of database rows. Callers fail open: log, count, read
  the database.

Both are django-redis connections, so the raw clients handed out here share their
connection pools with Django's cache API and with RQ (``USE_REDIS_CACHE``): one pool
per role per process, with timeouts and retries set once below.

A role can sit behind Redis Sentinel (REDIS_SENTINELS): its URL then names the
Sentinel service instead of a host (``redis://:password@kestrel-state/0``) and every
connection asks the Sentinels where the primary is, so Django's caches, sessions, RQ
and the raw clients all follow a failover without a restart. Reads go to the primary
too: a replica may not have the session a login has just written.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis import ConnectionPool, Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

Role = Literal["state", "cache"]

POOL_WAIT = 2.0  # seconds a thread waits for a free pooled connection

# The only maxmemory-policy under which the state role keeps what it holds.
SAFE_STATE_POLICIES = frozenset({"noeviction"})

# Django cache alias of each role (settings.CACHES).
ROLE_ALIASES: dict[str, str] = {"state": "sessions", "cache": "default"}

# Errors that mean "Redis cannot take this now", as opposed to a bad command: not
# answering, full (OOM under noeviction: the state role refuses writes rather than
# evict), or a demoted primary refusing writes until clients follow the failover.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    ConnectionRefusedError,
    OutOfMemoryError,
    ReadOnlyError,
)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means Redis did not answer (django-redis wraps the cause)."""
    if isinstance(exc, ConnectionInterrupted):
        exc = exc.__cause__
    return isinstance(exc, UNAVAILABLE_ERRORS)


def get_redis(role: Role = "state") -> Redis:
    """The raw redis-py client of a role (bytes in, bytes out), sharing its pool."""
    return get_redis_connection(ROLE_ALIASES[role])


def role_url(role: Role) -> str:
    return settings.CACHES[ROLE_ALIASES[role]]["LOCATION"]


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def parse_sentinels(addresses: list[str]) -> list[tuple[str, int]]:
    """["10.0.0.5:26379", "sentinel-b"] -> [("10.0.0.5", 26379), ("sentinel-b", 26379)]; ValueError if malformed."""
    sentinels = []
    for address in addresses:
        host, _, port = address.strip().rpartition(":") if ":" in address else (address.strip(), "", "26379")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{address!r} is not host:port")
        sentinels.append((host, int(port)))
    return sentinels


def connection_pool_options(
    *,
    role: Role,
    connect_timeout: float,
    socket_timeout: float,
    max_connections: int,
    retries: int,
    sentinels: list[tuple[str, int]] | None = None,
    sentinel_password: str = "",
) -> dict:
    """django-redis OPTIONS for a role; settings.py calls this for each CACHES alias.

    - Timeouts: a Redis that stops answering must cost a request seconds, not minutes.
    - Retries with exponential backoff and full jitter on connection errors and
      timeouts only, so a restart or failover is ridden out but a bad command is not
      repeated. The cap keeps the worst case (retries x cap) near a second.
    - A blocking pool: when every connection is busy, a thread waits (up to
      POOL_WAIT seconds) for one instead of opening connections without bound. That
      wait is contention inside this process, not Redis failing, so it is not cut
      short like the cache role's socket timeout.
    - Behind Sentinel (`sentinels`): Sentinel-managed connections, which look the
      primary up again after every connection error, so the same retries ride out a
      failover. redis-py has no blocking Sentinel pool; `max_connections` still caps it.
    """
    options = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
        "SOCKET_CONNECT_TIMEOUT": connect_timeout,
        "SOCKET_TIMEOUT": socket_timeout,
        "CONNECTION_POOL_CLASS": "core.instrumentation.InstrumentedBlockingConnectionPool",
        "CONNECTION_POOL_KWARGS": {
            "max_connections": max_connections,
            "timeout": POOL_WAIT,
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.025), retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 30,
            "client_name": f"kestrel-{role}",
        },
    }
    if sentinels:
        del options["CONNECTION_POOL_KWARGS"]["timeout"]  # a BlockingConnectionPool argument
        options.update(
            {
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "CONNECTION_POOL_CLASS": "core.instrumentation.InstrumentedSentinelConnectionPool",
                "SENTINELS": sentinels,
                # The Sentinels' own connections: short timeouts, so one dead Sentinel
                # costs a lookup a moment before the next is asked.
                "SENTINEL_KWARGS": {
                    "socket_connect_timeout": connect_timeout,
                    "socket_timeout": socket_timeout,
                    **({"password": sentinel_password} if sentinel_password else {}),
                },
            }
        )
    return options


def dedicated_pool(role: Role, **overrides) -> ConnectionPool:
    """A pool of the role's server apart from the shared one (long-lived subscriptions).

    Same URL, timeouts and, behind Sentinel, the same Sentinels as the role's
    django-redis pool; `overrides` replace connection arguments (retries, health checks).
    """
    from core.instrumentation import InstrumentedConnectionPool, InstrumentedSentinelConnectionPool

    options = settings.CACHES[ROLE_ALIASES[role]]["OPTIONS"]
    kwargs = {
        "socket_connect_timeout": options["SOCKET_CONNECT_TIMEOUT"],
        "socket_timeout": options["SOCKET_TIMEOUT"],
        **overrides,
    }
    url = role_url(role)
    if not options.get("SENTINELS"):
        return InstrumentedConnectionPool.from_url(url, **kwargs)
    # The URL's host names the Sentinel service (as django-redis reads it); the
    # managed connections ask the Sentinels for the primary's address.
    sentinel = Sentinel(options["SENTINELS"], sentinel_kwargs=options["SENTINEL_KWARGS"], **kwargs)
    return InstrumentedSentinelConnectionPool.from_url(
        url, service_name=urlsplit(url).hostname, sentinel_manager=sentinel, **kwargs
    )
