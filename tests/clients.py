"""Clients of a role's server(s) outside the role's pool, for tests that count what is
sent or need a connection of their own, on one server or on a cluster session."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster

from core.cluster import KestrelCluster
from core.cluster_url import parse_cluster_url
from core.redis import ROLE_ALIASES, RedisClient, Role, connection_pool_options, get_redis, is_cluster_url, role_url


def on_cluster() -> bool:
    """Whether this session's state role is a Redis Cluster (`make test-cluster`)."""
    return isinstance(get_redis("state"), RedisCluster)


def role_client(role: Role) -> RedisClient:
    """A new client of `role`'s server, or of its cluster, with connections of its own."""
    url = role_url(role)
    if not is_cluster_url(url):
        return Redis.from_url(url)
    nodes, password, ssl = parse_cluster_url(url)
    return KestrelCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], password=password, ssl=ssl)


@contextmanager
def commands_sent(client: RedisClient) -> Iterator[list[str]]:
    """The names of the commands `client` sends while the block runs, a pipeline's as
    one "PIPELINE" entry (so the list's length is the round trips on one server, and
    the calls on a cluster, where a pipeline is one round trip per node it touches)."""
    sent: list[str] = []
    execute, pipeline = client.execute_command, client.pipeline

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return execute(*args, **options)

    def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
        sent.append("PIPELINE")
        return pipeline(*args, **kwargs)

    client.execute_command = counting  # type: ignore[method-assign]
    client.pipeline = counted_pipeline  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        del client.execute_command, client.pipeline


def queued(pipe: Any) -> int:
    """How many commands `pipe` holds, on one server's pipeline or a cluster's."""
    strategy = getattr(pipe, "_execution_strategy", None)  # redis-py's cluster pipeline
    return len(strategy._command_queue) if strategy is not None else len(pipe.command_stack)


def role_servers(role: Role) -> list[Redis]:
    """A plain client of each server of the role: its one server, or every node of its cluster."""
    client = get_redis(role)
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


def caches_on_clusters(
    urls: dict[Role, str], *, timeout: float, max_connections: int = 10, retries: int = 1
) -> dict[str, Any]:
    """settings.CACHES with each role of `urls` on the cluster at its URL, its options as
    config/settings.py builds a cluster role's (with these timeouts, pool and retries)."""
    caches = copy.deepcopy(settings.CACHES)
    for role, url in urls.items():
        caches[ROLE_ALIASES[role]] = {
            **caches[ROLE_ALIASES[role]],
            "LOCATION": url,
            "OPTIONS": connection_pool_options(
                role=role,
                connect_timeout=timeout,
                socket_timeout=timeout,
                max_connections=max_connections,
                retries=retries,
                cluster=True,
            ),
        }
    return caches
