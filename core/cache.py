"""Kestrel's Django cache backend: django-redis, minus FLUSHDB."""

from __future__ import annotations

from django.conf import settings
from django_redis.cache import RedisCache as DjangoRedisCache


# django-redis ships no type information, so its base class is Any to mypy.
class RedisCache(DjangoRedisCache):  # type: ignore[misc]
    def clear(self) -> None:
        """Delete this Kestrel's keys only, by SCAN.

        django-redis clears with FLUSHDB, which would also wipe whatever else shares
        the database: another Kestrel with another prefix, or, on a one-server
        development layout, the state role's sessions and queues.
        """
        self.delete_pattern(f"{settings.KESTREL_KEY_PREFIX}:*", itersize=500)
