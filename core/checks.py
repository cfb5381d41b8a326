"""System checks for the Redis roles (run by `manage.py check`, runserver, migrate).

- E001: a role's Redis cannot be reached at all (the URL, minus password, is shown).
- E002: the queue role is a Redis Cluster (REDIS_URL is one and REDIS_QUEUE_URL is
  unset, or REDIS_QUEUE_URL is one): RQ needs a single primary.
- E004: the cache role is the state role's Redis Cluster (REDIS_URL is one and
  REDIS_CACHE_URL is unset): a cluster has one database, so the cache would share the
  state role's keys, and clearing it would delete them.
- W001: the state or queue role may evict keys: sessions, denylist entries, rate-limit
  counters and queued jobs would vanish under memory pressure (docs/design.md, "Redis roles").
- E003: KESTREL_KEY_PREFIX is not a plain word: a brace in it would become every key's
  hash tag on Redis Cluster, a colon or glob character would blur the key families
  (docs/design.md, "The key grammar").

A role on a Redis Cluster is reachable when every primary answers, and each primary's
maxmemory-policy is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from core.keys import prefix_ok
from core.redis import (
    SAFE_STATE_POLICIES,
    RedisClient,
    Role,
    get_redis,
    is_cluster_url,
    redact_url,
    reported_roles,
    role_url,
)

# What each role that must not evict would lose (W001).
_EVICTABLE = {
    "state": "sessions, revoked tokens, rate-limit counters and queued jobs",
    "queue": "queued jobs, their results and the workers' registrations",
}


@register(Tags.caches, deploy=False)
def check_redis_roles(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for role in reported_roles():
        url = role_url(role)
        if role == "queue" and is_cluster_url(url):
            continue  # check_queue_role says why; a single-server client cannot open the URL
        try:
            client = get_redis(role)  # a cluster's client asks its nodes for the slots when built
            client.ping()  # every primary of a cluster
        except (RedisError, RedisClusterException) as exc:
            messages.append(
                Error(
                    f"Redis for the {role} role cannot be reached at {redact_url(url)}: {exc}",
                    hint="Start Redis, or set REDIS_URL / REDIS_CACHE_URL / REDIS_QUEUE_URL (see README).",
                    id="kestrel.E001",
                )
            )
            continue
        if role in _EVICTABLE:
            messages.extend(_check_state_policy(client, redact_url(url), role))
    return messages


@register(Tags.caches, deploy=False)
def check_queue_role(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E002: RQ (the queue role) needs a single primary, never a Redis Cluster."""
    url = role_url("queue")
    if not is_cluster_url(url):
        return []
    if url == role_url("state"):
        problem = "REDIS_URL is a Redis Cluster and REDIS_QUEUE_URL is not set"
    else:
        problem = "REDIS_QUEUE_URL is a Redis Cluster"
    return [
        Error(
            f"{problem} ({redact_url(url)}): the job queues need a single Redis primary, as RQ cannot run on a "
            "cluster (multi-key commands and scripts across slots).",
            hint="Set REDIS_QUEUE_URL to a single Redis server, or to a Sentinel service with REDIS_QUEUE_SENTINELS.",
            id="kestrel.E002",
        )
    ]


@register(Tags.caches, deploy=False)
def check_key_prefix(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E003: the key prefix is a plain word (no brace: it would become every key's hash tag)."""
    prefix = getattr(settings, "KESTREL_KEY_PREFIX", None)
    if prefix_ok(prefix):
        return []
    return [
        Error(
            f"KESTREL_KEY_PREFIX {prefix!r} cannot start Redis keys.",
            hint="Set REDIS_KEY_PREFIX to a lowercase word (letters, digits, '_' or '-'), at most 32 characters.",
            id="kestrel.E003",
        )
    ]


@register(Tags.caches, deploy=False)
def check_cache_role(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """E004: the cache role needs a database of its own, which a state role's cluster cannot give."""
    url = role_url("cache")
    if not is_cluster_url(url) or url != role_url("state"):
        return []
    return [
        Error(
            f"REDIS_URL is a Redis Cluster ({redact_url(url)}) and REDIS_CACHE_URL is not set: the cache role would "
            "share the state role's keys (a cluster has no other database), and clearing the cache would delete them.",
            hint="Set REDIS_CACHE_URL to a Redis server or cluster of its own (maxmemory-policy allkeys-lru).",
            id="kestrel.E004",
        )
    ]


def _policies(client: RedisClient) -> dict[str, object]:
    """maxmemory-policy of the server ("": the one server), or of each primary of a cluster by host:port."""
    if isinstance(client, RedisCluster):
        return {
            node.name: client.config_get("maxmemory-policy", target_nodes=node).get("maxmemory-policy")
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
        }
    return {"": client.config_get("maxmemory-policy").get("maxmemory-policy")}


def _check_state_policy(client: RedisClient, url: str, role: Role = "state") -> list[CheckMessage]:
    """W001 unless the server (each primary) keeps what the state (or queue) role holds: SAFE_STATE_POLICIES."""
    try:
        policies = _policies(client)
    except ResponseError:
        # Managed Redis services often forbid CONFIG; nothing to check then.
        return []
    messages: list[CheckMessage] = []
    for node, policy in policies.items():
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy in SAFE_STATE_POLICIES:
            continue
        where = f"{url} (primary {node})" if node else url
        messages.append(
            Warning(
                f"The {role} role's Redis at {where} has maxmemory-policy {policy!r} and can evict {_EVICTABLE[role]}.",
                hint=f"Run the {role} role with `maxmemory-policy noeviction` (and AOF); "
                "give the cache its own server.",
                id="kestrel.W001",
            )
        )
    return messages
