"""The cache and state roles on a Redis Cluster (docs/design.md, "Redis roles").

A role whose URL is `redis+cluster://` or `rediss+cluster://` (core.cluster_url) gets
this module's django-redis client class and connection factory (core.redis.
connection_pool_options): one redis-py RedisCluster per role and process, which keeps a
pool per node itself, so django-redis's pool per URL does not apply. It takes the role's
settings: timeouts, a blocking pool of max_connections per node, the role's retries and
circuit breaker, the client name (kestrel-<role>) and the command metrics
(REDIS_CLIENT_CLASS, core.instrumentation.redis_cluster_client). Reads go to primaries.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, NoReturn

from django.utils.module_loading import import_string
from django_redis.client import DefaultClient
from django_redis.pool import ConnectionFactory
from redis.backoff import NoBackoff
from redis.client import EMPTY_RESPONSE
from redis.cluster import ClusterNode, ClusterPipeline, ClusterPubSub, RedisCluster, TransactionStrategy
from redis.commands.helpers import list_or_args
from redis.connection import Connection, SSLConnection
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError

from core.cluster_url import parse_cluster_url
from core.redis import POOL_WAIT, UNAVAILABLE_ERRORS, Breaker, BreakerRetry, CircuitOpen, ClusterUnavailable


def unavailable(exc: RedisClusterException) -> Exception | None:
    """The ConnectionError that redis-py's cluster error stands for, or None for a usage error.

    redis-py raises RedisClusterException when no node answered the topology refresh
    (its cause is the last node's error) and SlotNotCoveredError when no primary serves
    a slot: both mean the role did not answer. The breaker's refusal stays CircuitOpen.
    """
    cause = exc.__cause__
    if isinstance(cause, CircuitOpen):
        return CircuitOpen(str(cause))
    if isinstance(exc, SlotNotCoveredError) or isinstance(cause, UNAVAILABLE_ERRORS):
        return ClusterUnavailable(str(exc))
    return None


def reraise(exc: RedisClusterException) -> NoReturn:
    """Raise what `exc` stands for: its ConnectionError (`unavailable`), else `exc` itself."""
    error = unavailable(exc)
    if error is None:
        raise exc
    raise error from exc


class BreakerConnectionMixin:
    """A cluster node's connection under its role's circuit breaker (core.redis.Breaker).

    RedisCluster gives each node's connections a Retry of its own without retries, and
    sends and reads on them itself, so the breaker that a single server's pool carries in
    its Retry wraps the connection here: opening it (a BreakerRetry without retries),
    sending (refused while the breaker is open) and reading (a timeout opens it, a reply
    closes it). One breaker per role: a hung node makes the role fail fast for the
    cooldown, as a hung single server does, and redis-py's topology refresh after the
    timeout fails fast too instead of waiting on every node.
    """

    kestrel_breaker: Breaker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry = BreakerRetry(NoBackoff(), 0, (RedisConnectionError,), breaker=self.kestrel_breaker)

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.kestrel_breaker.admit()
        super().send_packed_command(command, check_health)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        with self.kestrel_breaker.judging():
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        self.kestrel_breaker.answered()
        return response


def node_connection_class(breaker: Breaker, *, tls: bool) -> type[Connection]:
    """The connection class of a cluster role's nodes: TCP or TLS, CONNECT recorded, under `breaker`."""
    from core.instrumentation import instrumented  # core.instrumentation imports this module

    base = instrumented(SSLConnection if tls else Connection)
    attributes = {"kestrel_breaker": breaker, "__module__": __name__, "__doc__": BreakerConnectionMixin.__doc__}
    return type(f"Cluster{base.__name__}", (BreakerConnectionMixin, base), attributes)


class KestrelClusterPipeline(ClusterPipeline):
    """redis-py's cluster pipeline: unavailability as ConnectionErrors; a MULTI's replies
    parsed; DEL of keys in one slot; PUBLISH and scripts (SCRIPT LOAD, EVALSHA:
    core.scripts), which it refuses."""

    # The SHA that script_load queues in its place is an ECHO, keyless: any node answers
    # it, also when redis-py sends a failed pipeline's commands again one by one.
    COMMAND_FLAGS = {**ClusterPipeline.COMMAND_FLAGS, "ECHO": RedisCluster.RANDOM}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_sources: dict[str, Any] = {}  # SHA -> source, from script_load

    def _get_command_keys(self, *args: Any) -> Any:
        """A command's keys, for routing it: a script's from its own arguments, where redis-py's
        pipeline would ask a node (COMMAND GETKEYS, a round trip per call)."""
        if str(args[0]).upper() in ("EVAL", "EVALSHA"):
            return list(args[3 : 3 + int(args[2])])
        return super()._get_command_keys(*args)  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        strategy = self._execution_strategy
        # A MULTI's replies come back raw from redis-py's transaction strategy (it applies
        # only the cluster's own callbacks): parsed here as a single server's would be.
        queued = (
            [(c.args[0], c.options) for c in strategy._command_queue]
            if isinstance(strategy, TransactionStrategy)
            else []
        )
        try:
            replies = super().execute(raise_on_error)
        except RedisClusterException as exc:
            reraise(exc)
        if queued and len(replies) == len(queued):
            callbacks = self.get_default_node().redis_connection.response_callbacks  # type: ignore[no-untyped-call]
            replies = [
                callbacks[name](reply, **{k: v for k, v in options.items() if k not in ("keys", EMPTY_RESPONSE)})
                if name in callbacks
                and name not in self.cluster_response_callbacks
                and not isinstance(reply, Exception)
                else reply
                for reply, (name, options) in zip(replies, queued, strict=True)
            ]
        return replies

    def delete(self, *names: Any) -> Any:
        """DEL; redis-py's cluster pipeline refuses several keys even when they share a slot."""
        if len(names) > 1 and len({self.keyslot(name) for name in names}) == 1:  # type: ignore[no-untyped-call]
            return self.execute_command("DEL", *names)  # type: ignore[no-untyped-call]
        return super().delete(*names)  # type: ignore[no-untyped-call]

    def unlink(self, *names: Any) -> Any:
        """UNLINK, as delete()."""
        if len(names) > 1 and len({self.keyslot(name) for name in names}) == 1:  # type: ignore[no-untyped-call]
            return self.execute_command("UNLINK", *names)  # type: ignore[no-untyped-call]
        return super().unlink(*names)  # type: ignore[no-untyped-call]

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        """PUBLISH, which redis-py's cluster pipeline refuses: any node sends it to the whole cluster."""
        return self.execute_command("PUBLISH", channel, message, **kwargs)  # type: ignore[no-untyped-call]

    def evalsha(self, sha: Any, numkeys: int, *keys_and_args: Any) -> Any:
        """EVALSHA, which redis-py's cluster pipeline refuses: it goes to the node of its keys'
        slot. A script this pipeline was given (script_load) is sent as EVAL with its source."""
        source = self._kestrel_sources.get(sha)
        if source is not None:
            return self.execute_command("EVAL", source, numkeys, *keys_and_args)  # type: ignore[no-untyped-call]
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)  # type: ignore[no-untyped-call]

    def script_load(self, script: Any) -> Any:
        """SCRIPT LOAD, which redis-py's cluster pipeline refuses (a pipeline's command goes to one node).

        Nothing is loaded: the pipeline's EVALSHAs of the script go as EVAL with its source
        (which the node compiles once and caches), so they run on whichever node their keys
        live, with no round trip to load it first and no NOSCRIPT after a failover. The
        pipeline's reply in its place is the SHA, as a single server's would be.
        """
        source = script.encode() if isinstance(script, str) else script
        sha = hashlib.sha1(source, usedforsecurity=False).hexdigest()  # the script's name in Redis, not a secret
        self._kestrel_sources[sha] = script
        return self.execute_command("ECHO", sha)  # type: ignore[no-untyped-call]


class KestrelCluster(RedisCluster):
    """redis-py's RedisCluster as a Kestrel role uses it.

    - Never retried after a timeout (docs/design.md, "Timeouts, retries and the circuit
      breaker"): redis-py retries connection errors, CLUSTERDOWN and uncovered slots only.
    - A cluster that does not answer raises a ConnectionError (`unavailable`), so every
      caller's failure policy applies as on a single server.
    - MGET across slots is one MGET per slot, pipelined by node (not atomic: no MGET
      across slots can be); PING and DBSIZE ask every primary.
    """

    ERRORS_ALLOW_RETRY = (RedisConnectionError, ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]
    pipeline_class: type[KestrelClusterPipeline] = KestrelClusterPipeline
    pubsub_class: type[ClusterPubSub] = ClusterPubSub

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisClusterException as exc:
            reraise(exc)

    def mget(self, keys: Any, *args: Any) -> Any:
        """MGET; keys in several slots are read one slot at a time, pipelined by node."""
        names = list_or_args(keys, args)
        if len({self.keyslot(name) for name in names}) > 1:  # type: ignore[no-untyped-call]
            return self.mget_nonatomic(names)
        return super().mget(names)

    def dbsize(self, **kwargs: Any) -> Any:
        """DBSIZE of the whole cluster: the sum over every primary (redis-py asks one node)."""
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().dbsize(**kwargs)

    def ping(self, **kwargs: Any) -> Any:
        """PING every primary (redis-py asks one node): True only when each answers."""
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().ping(**kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> KestrelClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return self.pipeline_class(
            nodes_manager=self.nodes_manager,
            commands_parser=self.commands_parser,
            startup_nodes=list(self.nodes_manager.startup_nodes.values()),
            result_callbacks=self.result_callbacks,
            cluster_response_callbacks=self.cluster_response_callbacks,
            read_from_replicas=self.read_from_replicas,
            load_balancing_strategy=self.load_balancing_strategy,
            reinitialize_steps=self.reinitialize_steps,
            retry=self.retry,
            lock=self._lock,
            transaction=transaction,
            event_dispatcher=self._event_dispatcher,
        )

    def pubsub(self, node: Any = None, host: Any = None, port: Any = None, **kwargs: Any) -> ClusterPubSub:
        return self.pubsub_class(self, node=node, host=host, port=port, **kwargs)


# (URL, client name) -> (the process that built it, the role's cluster client)
_clusters: dict[tuple[str, str], tuple[int, RedisCluster]] = {}
_clusters_lock = threading.Lock()


def _new_lock() -> None:
    # A process forked while another thread built a client must not inherit the lock held.
    global _clusters_lock
    _clusters_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock)


# django-redis ships no type information, so its base classes are Any to mypy.
class ClusterConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """django-redis's connection factory for a cluster role: one RedisCluster per role and process."""

    def connect(self, url: str) -> RedisCluster:
        key = (url, self.pool_cls_kwargs["client_name"])
        with _clusters_lock:
            built = _clusters.get(key)
            if built is None or built[0] != os.getpid():  # a forked child builds its own
                built = _clusters[key] = (os.getpid(), self.build(url))
            return built[1]

    def build(self, url: str) -> RedisCluster:
        """A RedisCluster of the URL's seed nodes with the role's settings; ClusterUnavailable if none answers."""
        nodes, password, tls = parse_cluster_url(url)
        pool: dict[str, Any] = self.pool_cls_kwargs
        retry: BreakerRetry = pool["retry"]
        (host, port), *others = nodes
        client_class = import_string(self.options["REDIS_CLIENT_CLASS"])
        try:
            cluster: RedisCluster = client_class(
                # Given a URL (the first seed node's; the others follow), redis-py builds
                # each node's pool from connection_pool_class and connection_class, which
                # it otherwise takes from neither.
                url=f"redis://[{host}]:{port}" if ":" in host else f"redis://{host}:{port}",
                startup_nodes=[ClusterNode(other_host, other_port) for other_host, other_port in others],
                password=password,
                socket_timeout=self.options["SOCKET_TIMEOUT"],
                socket_connect_timeout=self.options["SOCKET_CONNECT_TIMEOUT"],
                connection_pool_class=self.pool_cls,
                connection_class=node_connection_class(retry.breaker, tls=tls),
                max_connections=pool["max_connections"],
                timeout=pool.get("timeout", POOL_WAIT),
                client_name=pool["client_name"],
                # The cluster's own retries after a connection error or CLUSTERDOWN (it
                # only reads their number from it); the breaker is the connections'.
                retry=retry,
                # A process that starts while a shard is down serves the other slots.
                require_full_coverage=False,
            )
        except RedisClusterException as exc:
            reraise(exc)
        return cluster

    def disconnect(self, connection: RedisCluster) -> None:
        connection.disconnect_connection_pools()


class ClusterClient(DefaultClient):  # type: ignore[misc]
    """django-redis's client on a cluster role: its URL is one cluster.

    django-redis reads a comma in LOCATION as a list of servers (primary, replicas); in
    a cluster URL the commas separate seed nodes of one cluster.
    """

    def __init__(self, server: str, params: dict[str, Any], backend: Any) -> None:
        super().__init__([server], params, backend)
