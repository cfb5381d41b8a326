"""System checks for the Redis roles (run by `manage.py check`, runserver, migrate).

- E001: a role's Redis cannot be reached at all (the URL, minus password, is shown).
- W001: the state role may evict keys: sessions, denylist entries, rate-limit
  counters and queued jobs would vanish under memory pressure (docs/design.md, "Redis roles").
- E002: KESTREL_KEY_PREFIX is not a plain word: a brace in it would become every key's
  hash tag on Redis Cluster, a colon or glob character would blur the key families
  (docs/design.md, "The key grammar").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from core.keys import prefix_ok
from core.redis import ROLE_ALIASES, SAFE_STATE_POLICIES, get_redis, redact_url, role_url


@register(Tags.caches, deploy=False)
def check_redis_roles(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for role in ROLE_ALIASES:
        url = redact_url(role_url(role))
        client = get_redis(role)
        try:
            client.ping()
        except RedisError as exc:
            messages.append(
                Error(
                    f"Redis for the {role} role cannot be reached at {url}: {exc}",
                    hint="Start Redis, or set REDIS_URL / REDIS_CACHE_URL (see README).",
                    id="kestrel.E001",
                )
            )
            continue
        if role == "state":
            messages.extend(_check_state_policy(client, url))
    return messages


@register(Tags.caches, deploy=False)
def check_key_prefix(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    prefix = getattr(settings, "KESTREL_KEY_PREFIX", None)
    if prefix_ok(prefix):
        return []
    return [
        Error(
            f"KESTREL_KEY_PREFIX {prefix!r} cannot start Redis keys.",
            hint="Set REDIS_KEY_PREFIX to a lowercase word (letters, digits, '_' or '-'), at most 32 characters.",
            id="kestrel.E002",
        )
    ]


def _check_state_policy(client: Redis, url: str) -> list[CheckMessage]:
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except ResponseError:
        # Managed Redis services often forbid CONFIG; nothing to check then.
        return []
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy in SAFE_STATE_POLICIES:
        return []
    return [
        Warning(
            f"The state role's Redis at {url} has maxmemory-policy {policy!r} and can evict "
            "sessions, revoked tokens, rate-limit counters and queued jobs.",
            hint="Run the state role with `maxmemory-policy noeviction` (and AOF); give the cache its own server.",
            id="kestrel.W001",
        )
    ]
