"""Rebuild a Redis structure from the database without storing a copy older than a write.

WATCH the keys every write touches (and the rebuild lease, which invalidation deletes),
load from the database, then replace the structure in MULTI/EXEC: a write that lands
during the load aborts the EXEC, and the caller serves what it loaded, uncached.
Redis errors propagate: the caller states its failure policy (core.redis.fail_open).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis.exceptions import WatchError

from core import metrics
from core.redis import RedisClient, RedisPipeline

T = TypeVar("T")


@dataclass(frozen=True)
class Lease:
    """One rebuilder at a time: `key` is taken with SET NX PX `ttl_ms`, watched, and
    deleted in the same EXEC as the store. Invalidations delete it to abort a rebuild."""

    key: str
    ttl_ms: int


@dataclass(frozen=True)
class Rebuilt(Generic[T]):
    """What a rebuild did. `loaded` is False only when another process held the lease
    (nothing was read); then `value` is None and the caller reads the database itself."""

    value: T | None
    stored: bool
    loaded: bool = True


def rebuild(
    client: RedisClient,
    *,
    family: str,
    load: Callable[[], T],
    store: Callable[[RedisPipeline, T], None],
    watch: Sequence[str] = (),
    lease: Lease | None = None,
    attempts: int = 1,
) -> Rebuilt[T]:
    """Load with `load()` and write it with `store(pipe, value)` inside MULTI, under WATCH.

    Tries `attempts` times while writes keep landing (counted as `cache.rebuild_raced`
    for `family`); the last value loaded is returned either way, stored or not.
    """
    if lease is not None and attempts != 1:
        raise ValueError("a leased rebuild makes one attempt: a lost race means the lease was invalidated")
    if lease is not None and not client.set(lease.key, uuid.uuid4().hex, nx=True, px=lease.ttl_ms):
        metrics.incr("cache.rebuild_busy", family=family)
        return Rebuilt(value=None, stored=False, loaded=False)
    watched = [*watch, lease.key] if lease is not None else list(watch)
    value: T | None = None
    with client.pipeline(transaction=True) as pipe:
        for _attempt in range(attempts):
            try:
                if watched:
                    pipe.watch(*watched)
                value = load()
                pipe.multi()
                store(pipe, value)
                if lease is not None:
                    pipe.delete(lease.key)
                pipe.execute()
            except WatchError:
                metrics.incr("cache.rebuild_raced", family=family)
                continue
            metrics.incr("cache.rebuilt", family=family)
            return Rebuilt(value=value, stored=True)
    return Rebuilt(value=value, stored=False)
