"""Redis clients per role, the one place Kestrel gets a connection (docs/design.md, "Redis roles").

`state` (must not evict; errors are errors), `cache` (evictable copies; callers fail
open) and `queue` (RQ's jobs, queues, registries and workers: a single primary, since RQ
cannot run on Redis Cluster; unless REDIS_QUEUE_URL moves it, the state role's database,
pool and breaker). Each is a django-redis connection, so Django's caches, sessions, RQ and
the raw clients share one pool per role per process, optionally behind Sentinel.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NotRequired, TypeAlias, TypedDict, TypeVar, cast, overload
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django_redis import get_redis_connection
from django_redis.exceptions import ConnectionInterrupted
from redis import ConnectionPool, Redis
from redis.backoff import AbstractBackoff, ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from core import metrics

if TYPE_CHECKING:
    from redis.client import Pipeline

    from core.cluster import KestrelCluster, KestrelClusterPipeline

Role = Literal["state", "cache", "queue"]

# What get_redis returns: a single server's client, or a cluster's for a cache or state
# role whose URL is a cluster's (core.cluster). Both take the same commands.
RedisClient: TypeAlias = "Redis | KestrelCluster"
# What a RedisClient's pipeline() returns.
RedisPipeline: TypeAlias = "Pipeline | KestrelClusterPipeline"

T = TypeVar("T")

POOL_WAIT = 2.0  # seconds a thread waits for a free pooled connection
# Retries after a refused or dropped connection wait up to min(cap, base * 2**n) s
# (full jitter): at most 0.05, 0.1, 0.2 s for the state role's three.
RETRY_BACKOFF_BASE = 0.025
RETRY_BACKOFF_CAP = 0.5
# Seconds a role that timed out fails fast before one call probes it again (Breaker):
# short, since it is also the longest a recovered server goes unused.
BREAKER_COOLDOWN = 1.0

# The only maxmemory-policy under which the state and queue roles keep what they hold.
SAFE_STATE_POLICIES = frozenset({"noeviction"})

# Django cache alias of each role (settings.CACHES). "queues" is no cache anything uses:
# it is the queue role's connection, which RQ_QUEUES reaches through USE_REDIS_CACHE.
ROLE_ALIASES: dict[Role, str] = {"state": "sessions", "cache": "default", "queue": "queues"}

# URL schemes of a Redis Cluster, on which RQ cannot run (multi-key commands and scripts
# across slots): the queue role needs a single primary.
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})

# Errors that mean "Redis cannot take this now", as opposed to a bad command: not
# answering, full (OOM under noeviction: the state role refuses writes rather than
# evict), or a demoted primary refusing writes until clients follow the failover. On a
# cluster also: the cluster down or a slot without a primary (a failover under way), a
# slot being moved (TRYAGAIN, or redirections past redis-py's limit: ClusterError), and
# no node answering (ClusterUnavailable, a ConnectionError).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    ConnectionRefusedError,
    OutOfMemoryError,
    ReadOnlyError,
    ClusterError,
    SlotNotCoveredError,
    TryAgainError,
)


class CircuitOpen(RedisConnectionError):
    """The role timed out moments ago and this call was not sent (Breaker)."""


class ClusterUnavailable(RedisConnectionError):
    """No node of a cluster role answered, or no primary serves the key's slot (core.cluster)."""


class ClusterUnsupported(RuntimeError):
    """What was asked needs a single server (or a Sentinel-managed primary), and the role is a Redis Cluster."""


class Breaker:
    """One role's circuit breaker in one process: a hung Redis costs a timeout, not one per call.

    After a call times out, the role fails fast with CircuitOpen (a RedisConnectionError,
    so each caller's failure policy applies) for `cooldown` seconds; then one probe call
    at a time, each given `probe_window` seconds, until an answer closes it. Only
    timeouts open it (docs/design.md, "Timeouts, retries and the circuit breaker").
    """

    def __init__(
        self, role: str, *, cooldown: float, probe_window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.role = role
        self.cooldown = cooldown
        self.probe_window = probe_window
        self._clock = clock
        self._lock = threading.Lock()
        # A process forked while another thread held the lock (RQ's work horse, forked
        # beside the worker's pub/sub thread) must not inherit it held.
        os.register_at_fork(after_in_child=self._new_lock)
        self._open = False
        self._retry_at = 0.0
        self._probe: tuple[int, float] | None = None  # (thread, until when it may probe)

    def _new_lock(self) -> None:
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._open

    def admit(self) -> None:
        """Return if a call may go to the server now; raise CircuitOpen if not."""
        if not self._open:  # the common case: no lock
            return
        me = threading.get_ident()
        with self._lock:
            if not self._open:
                return
            now = self._clock()
            if self._probe is not None and self._probe[0] == me:
                return  # the probe's own calls (a reconnect inside a command)
            if now >= self._retry_at and (self._probe is None or now >= self._probe[1]):
                self._probe = (me, now + self.probe_window)
                return
        raise CircuitOpen(f"Redis ({self.role} role) timed out moments ago; failing fast until it answers")

    def timed_out(self) -> None:
        with self._lock:
            self._open = True
            self._retry_at = self._clock() + self.cooldown
            self._probe = None

    def reset(self) -> None:
        """Close the breaker (the server is known to answer again, e.g. a test resumed it)."""
        self.answered()

    def answered(self) -> None:
        if self._open:
            with self._lock:
                self._open = False
                self._probe = None

    def inconclusive(self) -> None:
        """The probe's call proved nothing either way: let the next call probe at once."""
        if self._open:
            me = threading.get_ident()
            with self._lock:
                if self._probe is not None and self._probe[0] == me:
                    self._probe = None

    @contextlib.contextmanager
    def judging(self) -> Iterator[None]:
        """Judge a call by how it fails: a timeout opens the breaker, an error reply is an
        answer, anything else proves nothing. A call that returns is the caller's to judge."""
        try:
            yield
        except (RedisTimeoutError, TimeoutError):
            self.timed_out()
            raise
        except ResponseError:
            self.answered()  # an error reply is still a reply
            raise
        except BaseException:
            self.inconclusive()
            raise


class BreakerRetry(Retry):
    """redis-py's Retry with the role's Breaker around every call.

    redis-py copies a pool's Retry into each connection; the copies share the one
    Breaker. A call counts as answered when it returns something or the server replied
    with an error. None proves nothing: it is also what a connect on a connection that
    is already open and a pub/sub poll with nothing to read return, without I/O.
    """

    def __init__(
        self,
        backoff: AbstractBackoff,
        retries: int,
        supported_errors: tuple[type[Exception], ...],
        *,
        breaker: Breaker,
    ) -> None:
        super().__init__(backoff, retries, supported_errors)
        self.breaker = breaker

    def __deepcopy__(self, memo: dict[int, object]) -> BreakerRetry:
        # Each connection gets a deep copy; the breaker must stay the one shared object.
        memo[id(self.breaker)] = self.breaker
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for name, value in vars(self).items():
            setattr(clone, name, copy.deepcopy(value, memo))
        return clone

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[[Exception], object] | Callable[[Exception, int], object],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        self.breaker.admit()

        def retryable(error: Exception) -> bool:
            # A call refused by the breaker is not retried: that would only wait out backoffs.
            return not isinstance(error, CircuitOpen) and (is_retryable is None or is_retryable(error))

        with self.breaker.judging():
            result = super().call_with_retry(do, fail, retryable, with_failure_count)
        if result is None:
            self.breaker.inconclusive()
        else:
            self.breaker.answered()
        return result


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means Redis did not answer (django-redis wraps the cause)."""
    if isinstance(exc, ConnectionInterrupted):
        exc = exc.__cause__
    return isinstance(exc, UNAVAILABLE_ERRORS)


@dataclass
class Outcome:
    """How a fail_open block ended: `failed` when Redis did not answer, `error` saying how."""

    failed: bool = False
    error: BaseException | None = None


@contextlib.contextmanager
def fail_open(
    counter: str, message: str, *args: object, log: logging.Logger, amount: int = 1, **labels: str
) -> Iterator[Outcome]:
    """Run the block; if Redis does not answer (is_unavailable), count `counter`, log
    `message % args` and the error as a warning, and carry on: check `outcome.failed`.

    Every other error propagates. The caller's comment says why failing open is right there.
    """
    outcome = Outcome()
    try:
        yield outcome
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        metrics.incr(counter, amount, **labels)
        log.warning(message + " (%s)", *args, exc)
        outcome.failed, outcome.error = True, exc


@overload
def get_redis(role: Literal["queue"]) -> Redis: ...


@overload
def get_redis(role: Role = "state") -> RedisClient: ...


def get_redis(role: Role = "state") -> RedisClient:
    """The raw redis-py client of a role (bytes in, bytes out), sharing its pool.

    A RedisCluster when the role's URL is a cluster's (core.cluster: one per role and
    process); never for the queue role, which check kestrel.E002 keeps on one primary.
    """
    # django-redis has no types; its client's connection is a Redis or, through
    # core.cluster's client class, a RedisCluster.
    return cast(RedisClient, get_redis_connection(ROLE_ALIASES[role]))


def breaker(role: Role) -> Breaker:
    """The role's circuit breaker in this process (one per role, shared by its connections)."""
    return role_options(role)["CONNECTION_POOL_KWARGS"]["retry"].breaker


def role_url(role: Role) -> str:
    # settings.CACHES is dict[str, dict[str, Any]] in django-stubs; LOCATION is the URL.
    return cast(str, settings.CACHES[ROLE_ALIASES[role]]["LOCATION"])


def role_options(role: Role) -> RoleOptions:
    """The role's django-redis OPTIONS, as connection_pool_options built them."""
    # settings.CACHES is dict[str, dict[str, Any]] in django-stubs; settings.py builds each
    # role's OPTIONS with connection_pool_options.
    return cast(RoleOptions, settings.CACHES[ROLE_ALIASES[role]]["OPTIONS"])


def is_cluster_url(url: str) -> bool:
    """True for a Redis Cluster's URL (CLUSTER_SCHEMES)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def same_database(role: Role, other: Role) -> bool:
    """True when two roles are configured as one database: the same URL and Sentinels."""
    sentinels, other_sentinels = role_options(role).get("SENTINELS"), role_options(other).get("SENTINELS")
    return role_url(role) == role_url(other) and sentinels == other_sentinels


def reported_roles() -> list[Role]:
    """The roles /healthz, /metrics, /ops, redis_audit and the system checks probe one by one.

    The queue role only when it is not the state role's database (its default): that
    database is reported once, as the state role.
    """
    return [role for role in ROLE_ALIASES if role != "queue" or not same_database("queue", "state")]


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs (a cluster's too: host:port,host:port)."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not at or not colon:
        return url
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def parse_sentinels(addresses: list[str]) -> list[tuple[str, int]]:
    """["10.0.0.5:26379", "sentinel-b"] -> [("10.0.0.5", 26379), ("sentinel-b", 26379)]; ValueError if malformed."""
    sentinels = []
    for address in addresses:
        host, _, port = address.strip().rpartition(":") if ":" in address else (address.strip(), "", "26379")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{address!r} is not host:port")
        sentinels.append((host, int(port)))
    return sentinels


class PoolKwargs(TypedDict):
    """CONNECTION_POOL_KWARGS: arguments of the role's redis-py connection pool."""

    max_connections: int
    timeout: NotRequired[float]  # a BlockingConnectionPool argument: not behind Sentinel
    retry: BreakerRetry
    retry_on_error: list[type[Exception]]
    health_check_interval: int
    client_name: str


class SentinelKwargs(TypedDict):
    """SENTINEL_KWARGS: arguments of the connections to the Sentinels themselves."""

    socket_connect_timeout: float
    socket_timeout: float
    password: NotRequired[str]


class RoleOptions(TypedDict):
    """A role's django-redis OPTIONS (connection_pool_options).

    CONNECTION_FACTORY behind Sentinel or on a cluster, the last two only behind Sentinel.
    """

    CLIENT_CLASS: str
    REDIS_CLIENT_CLASS: str
    SERIALIZER: str
    SOCKET_CONNECT_TIMEOUT: float
    SOCKET_TIMEOUT: float
    CONNECTION_POOL_CLASS: str
    CONNECTION_POOL_KWARGS: PoolKwargs
    CONNECTION_FACTORY: NotRequired[str]
    SENTINELS: NotRequired[list[tuple[str, int]]]
    SENTINEL_KWARGS: NotRequired[SentinelKwargs]


def connection_pool_options(
    *,
    role: Role,
    connect_timeout: float,
    socket_timeout: float,
    max_connections: int,
    retries: int,
    sentinels: list[tuple[str, int]] | None = None,
    sentinel_password: str = "",
    cluster: bool = False,
) -> RoleOptions:
    """django-redis OPTIONS for a role; settings.py calls this for each CACHES alias.

    Timeouts; retries with jittered exponential backoff on connection errors only (never
    on timeouts); the role's circuit breaker; a blocking pool of `max_connections`; and
    Sentinel-managed connections when `sentinels` is given. docs/design.md ("Timeouts,
    retries and the circuit breaker") says why each is set as it is. With `cluster`, the
    role's URL is a Redis Cluster's: core.cluster's client builds one RedisCluster from
    the same settings, the pool's per node.
    """
    if cluster and sentinels:
        raise ImproperlyConfigured(
            f"The {role} role's URL is a Redis Cluster, which fails over by itself: it takes no Sentinels."
        )
    options: RoleOptions = {
        "CLIENT_CLASS": "django_redis.client.DefaultClient",
        # Django's cache API, get_redis, RQ (django-rq's USE_REDIS_CACHE) and pub/sub all
        # use this client: the command metrics (core.instrumentation).
        "REDIS_CLIENT_CLASS": "core.instrumentation.redis_client",
        "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
        "SOCKET_CONNECT_TIMEOUT": connect_timeout,
        "SOCKET_TIMEOUT": socket_timeout,
        "CONNECTION_POOL_CLASS": "core.instrumentation.InstrumentedBlockingConnectionPool",
        "CONNECTION_POOL_KWARGS": {
            "max_connections": max_connections,
            "timeout": POOL_WAIT,
            "retry": BreakerRetry(
                ExponentialWithJitterBackoff(cap=RETRY_BACKOFF_CAP, base=RETRY_BACKOFF_BASE),
                retries,
                (RedisConnectionError,),
                breaker=Breaker(role, cooldown=BREAKER_COOLDOWN, probe_window=connect_timeout + socket_timeout),
            ),
            "retry_on_error": [RedisConnectionError],
            "health_check_interval": 30,
            "client_name": f"kestrel-{role}",
        },
    }
    if sentinels:
        del options["CONNECTION_POOL_KWARGS"]["timeout"]  # a BlockingConnectionPool argument
        # The Sentinels' own connections: short timeouts, so one dead Sentinel
        # costs a lookup a moment before the next is asked.
        sentinel_kwargs: SentinelKwargs = {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout}
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
        options.update(
            {
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "CONNECTION_POOL_CLASS": "core.instrumentation.InstrumentedSentinelConnectionPool",
                "SENTINELS": sentinels,
                "SENTINEL_KWARGS": sentinel_kwargs,
            }
        )
    if cluster:
        options.update(
            {
                "CLIENT_CLASS": "core.cluster.ClusterClient",
                "CONNECTION_FACTORY": "core.cluster.ClusterConnectionFactory",
                "REDIS_CLIENT_CLASS": "core.instrumentation.redis_cluster_client",
            }
        )
    return options


def is_cluster(client: object) -> bool:
    """True for a cluster role's client or pipeline (core.cluster), False for a single server's."""
    return isinstance(client, RedisCluster)


def dedicated_pool(role: Role, *, key: str | None = None, **overrides: object) -> ConnectionPool:
    """A pool apart from the role's shared one, for long-lived subscriptions.

    Same URL, timeouts and, behind Sentinel, the same Sentinels as the role's
    django-redis pool; `overrides` replace connection arguments (retries, health checks,
    client name). On a cluster role it is a pool of one node, the primary that serves
    `key`'s slot now (in the role's client's slot map), with that node's connection
    settings (password, TLS, timeouts, the role's breaker): a new pool on each call, for
    a sharded subscription (SSUBSCRIBE) that has to be made on its slot's node. Without
    `key` a cluster has no one server to pool: ClusterUnsupported.
    """
    from core.instrumentation import InstrumentedConnectionPool, InstrumentedSentinelConnectionPool

    url = role_url(role)
    if is_cluster_url(url):
        if key is None:
            raise ClusterUnsupported(
                f"The {role} role is a Redis Cluster ({redact_url(url)}): it has no single server for a dedicated "
                "pool; name the key whose slot's node to pool"
            )
        client = cast("KestrelCluster", get_redis(role))
        node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        shared = client.get_redis_connection(node).connection_pool
        return InstrumentedConnectionPool(
            connection_class=shared.connection_class, **{**shared.connection_kwargs, **overrides}
        )
    options = role_options(role)
    kwargs: dict[str, object] = {
        "socket_connect_timeout": options["SOCKET_CONNECT_TIMEOUT"],
        "socket_timeout": options["SOCKET_TIMEOUT"],
        **overrides,
    }
    if not options.get("SENTINELS"):
        return InstrumentedConnectionPool.from_url(url, **kwargs)
    # The URL's host names the Sentinel service (as django-redis reads it); the
    # managed connections ask the Sentinels for the primary's address.
    sentinel = Sentinel(options["SENTINELS"], sentinel_kwargs=options["SENTINEL_KWARGS"], **kwargs)
    return InstrumentedSentinelConnectionPool.from_url(
        url, service_name=urlsplit(url).hostname, sentinel_manager=sentinel, **kwargs
    )
