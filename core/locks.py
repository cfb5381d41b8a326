"""Distributed locks with fencing tokens (docs/design.md, "Locks with fencing").

    with redis_lock(f"user:{user.pk}:profile", ttl_ms=5_000) as lock:   # timeout=0: fail at once
        changed = fenced_update(User.objects.filter(pk=user.pk), "profile_fence", lock.fence, bio=bio)

State role. Fails closed: acquiring raises the Redis error when Redis does not answer
(503 from the API); releasing then only logs, and the TTL frees the lock.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.models import Model, QuerySet
from redis.commands.core import Script

from core import metrics
from core.keys import Rename, key, safe_id, with_tag
from core.redis import UNAVAILABLE_ERRORS, RedisClient, Role, get_redis

logger = logging.getLogger(__name__)

BACKOFF_FIRST = 0.005  # seconds: first pause of a waiting acquirer
BACKOFF_CAP = 0.1  # seconds: longest pause between attempts; bounds how late a waiter notices a release

# "user:7:profile": a lowercase word, then up to four plain segments (ids, words).
_READABLE_NAME = re.compile(r"[a-z][a-z0-9_]*(?::[A-Za-z0-9_.@+-]{1,64}){0,4}\Z")
_LABEL_WORD = re.compile(r"[a-z_]+\Z")


class LockNotAcquired(Exception):
    """Someone else holds the lock (and did not let go within the timeout)."""

    def __init__(self, name: str, waited: float):
        super().__init__(f"Lock {name!r} is held by someone else (waited {waited:.3f} s)")
        self.name = name
        self.waited = waited


# --- Keys ----------------------------------------------------------------------------

# Every lock key and the fence counter share one hash tag: the acquire script takes a
# lock and draws from the one counter in one atomic step, and on Redis Cluster a script's
# keys must share a slot. The counter is global by nature (fencing numbers are ordered
# across all locks), and locks are taken a few times per edit, never per read, so one
# slot holds them without becoming a hot spot (docs/design.md, "The key grammar").
LOCK_TAG = "locks"


def lock_key(name: str) -> str:
    """STRING "<owner token>:<fence>", state role, the holder's ttl_ms (always set): who holds lock `name`.

    Names are built by code, like "user:7:profile", and stay readable in the key
    (kestrel:core:lock:user:7:profile:{locks}) when they are plain segments. Anything else
    (free text, long values) is hashed, so no input can add glob characters or make a
    huge key. The entity "lock" is never used by the fence counter ("lock_fence"), so
    no lock name can collide with it.
    """
    if len(name) <= 200 and _READABLE_NAME.match(name):
        return with_tag(f"{key('core', 'lock')}:{name}", LOCK_TAG)
    return key("core", "lock", safe_id(name), tag=LOCK_TAG)


def fence_key() -> str:
    """STRING (integer), state role, no TTL: the last fencing number handed out, for every lock.

    Never expires and never evicted: fencing numbers must not go backwards. The acquire
    script hands out max(counter + 1, the server's clock in µs), so a counter lost in a
    failover still yields larger numbers (docs/design.md, "Locks with fencing").
    """
    return key("core", "lock_fence", tag=LOCK_TAG)


# The keys as named before hash tags (manage.py redis_rename_keys). The fence counter
# above all: a lost one would start fencing numbers again from the server's clock.
RENAMES = (
    Rename("core:lock", "core:lock:*", lambda old: None if "{" in old else with_tag(old, LOCK_TAG)),
    Rename("core:lock_fence", "core:lock_fence", lambda old: None if "{" in old else fence_key()),
)


# --- Lua -----------------------------------------------------------------------------

# KEYS: lock key, fence counter. ARGV: owner token, ttl ms.
# Returns {1, fence} when the caller holds the lock, {0, remaining pttl} when someone else does.
# The lock's value is "<token>:<fence>". If the value already starts with the caller's
# token, this is redis-py retrying a call whose reply was lost (the state role retries
# on timeouts): the first attempt took the lock, so it is returned, not refused.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if not current then
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local fence = math.max((tonumber(redis.call('GET', KEYS[2])) or 0) + 1, now_us)
  fence = string.format('%d', fence)
  redis.call('SET', KEYS[2], fence)
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
  return {1, fence}
end
local prefix = ARGV[1] .. ':'
if string.sub(current, 1, #prefix) == prefix then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, string.sub(current, #prefix + 1)}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock key. ARGV: the owner's value "<token>:<fence>".
# Returns 1 released; 0 it had expired and is free; -1 it had expired and someone else holds it.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
if current then
  return -1
end
return 0
"""

# KEYS: lock key. ARGV: the owner's value "<token>:<fence>", ttl ms.
# Sets the remaining TTL to ttl ms if the caller still holds the lock. Returns 1 if so, else 0.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@functools.cache
def _script(source: str) -> Script:
    # EVALSHA with a fallback to loading the script (after a restart or SCRIPT FLUSH);
    # the client is passed at each call, so the registering client does not matter.
    return get_redis("state").register_script(source)


# --- The lock ------------------------------------------------------------------------


def metric_label(name: str) -> str:
    """The lock's family for metrics: "user:7:profile" -> "user:*:profile".

    Ids are replaced so that there is one series per kind of lock, not one per user.
    """
    first, *rest = name.split(":")
    return ":".join([first, *(part if _LABEL_WORD.match(part) else "*" for part in rest)])


class Lock:
    """A held lock: `token` identifies the owner, `fence` orders it among all holders.

    Not shared between threads: each thread acquires its own.
    """

    def __init__(self, *, name: str, token: str, fence: int, ttl_ms: int, client: RedisClient, label: str):
        self.name = name
        self.key = lock_key(name)
        self.token = token
        self.fence = fence
        self.ttl_ms = ttl_ms
        self.label = label
        self.expired_while_held = False
        self._client = client
        self._value = f"{token}:{fence}"
        self._acquired_at = time.monotonic()
        self._released = False

    def held(self) -> bool:
        """Whether Redis still says this owner holds the lock (one GET)."""
        if self._released:
            return False
        return self._client.get(self.key) == self._value.encode()

    def extend(self, ms: int) -> bool:
        """Set the lock's remaining TTL to `ms` (not add to it), if still held; False if it was lost.

        A False means another holder may already be at work: stop, or rely on the
        fence to refuse this holder's writes.
        """
        _check_ttl(ms)
        if self._released:
            return False
        extended = bool(_script(_EXTEND)(keys=[self.key], args=[self._value, ms], client=self._client))
        if extended:
            self.ttl_ms = ms
        return extended

    def release(self) -> bool:
        """Delete the lock if this owner still holds it; False if it had expired meanwhile.

        Never raises for Redis being away (the TTL frees the lock); safe to call twice.
        """
        if self._released:
            return False
        self._released = True
        held_ms = (time.monotonic() - self._acquired_at) * 1000
        try:
            result = _script(_RELEASE)(keys=[self.key], args=[self._value], client=self._client)
        except UNAVAILABLE_ERRORS as exc:
            # The protected work is already done; failing the request now would report
            # a write that happened as an error. The TTL frees the lock.
            metrics.incr("lock.error", lock=self.label)
            logger.warning("Could not release lock %s (Redis unavailable; it expires by TTL): %s", self.name, exc)
            return False
        if result == 1:
            return True
        # Expired while held: the work under the lock took longer than its TTL, and
        # for a while someone else could have held it too. Fenced writes stayed safe;
        # the TTL (or an extend() in the loop) is too short for this work.
        self.expired_while_held = True
        metrics.incr("lock.expired_while_held", lock=self.label)
        logger.warning(
            "Lock %s expired while held (held %.0f ms, ttl %d ms, %s)",
            self.name,
            held_ms,
            self.ttl_ms,
            "now held by another owner" if result == -1 else "now free",
        )
        return False

    def __repr__(self) -> str:
        return f"<Lock {self.name!r} fence={self.fence}>"


def _check_ttl(ms: int) -> None:
    # Never without a TTL: a holder that crashes must not keep the lock forever.
    if isinstance(ms, bool) or not isinstance(ms, int) or ms <= 0:
        raise ValueError(f"A lock TTL must be a positive number of milliseconds, not {ms!r}")


def acquire(name: str, *, ttl_ms: int, timeout: float = 0.0, role: Role = "state", label: str | None = None) -> Lock:
    """Take lock `name` for `ttl_ms` milliseconds, waiting up to `timeout` seconds.

    Raises LockNotAcquired when someone else holds it past the timeout (timeout=0:
    one attempt, no wait), and the Redis error when Redis does not answer (fail
    closed). The caller must release() it; `redis_lock` does that for you.
    """
    _check_ttl(ttl_ms)
    if timeout < 0:
        raise ValueError("timeout must be >= 0 seconds")
    label = label or metric_label(name)
    # Locks must not be evicted: the state role (noeviction); the cache role evicts and
    # would drop a held lock. Fail closed below.
    client = get_redis(role)
    keys = [lock_key(name), fence_key()]
    token = secrets.token_hex(16)
    started = time.monotonic()
    deadline = started + timeout
    pause = BACKOFF_FIRST
    attempts = 0
    while True:
        attempts += 1
        try:
            got, value = _script(_ACQUIRE)(keys=keys, args=[token, ttl_ms], client=client)
        except UNAVAILABLE_ERRORS as exc:
            # Fail closed: without Redis there is no lock, so there must be no write.
            metrics.incr("lock.error", lock=label)
            logger.warning("Could not acquire lock %s: Redis unavailable: %s", name, exc)
            raise
        now = time.monotonic()
        if got:
            metrics.incr("lock.acquired", lock=label)
            if attempts > 1:
                metrics.incr("lock.wait_ms", round((now - started) * 1000), lock=label)
            return Lock(name=name, token=token, fence=int(value), ttl_ms=ttl_ms, client=client, label=label)
        if attempts == 1:
            metrics.incr("lock.contended", lock=label)  # once per acquire that found it held
        if now >= deadline:
            metrics.incr("lock.not_acquired", lock=label)
            if attempts > 1:
                metrics.incr("lock.wait_ms", round((now - started) * 1000), lock=label)
            raise LockNotAcquired(name, now - started)
        # Jittered so that waiters spread out; never past the holder's TTL (a crashed
        # holder's lock is taken as soon as it expires) nor past our deadline.
        sleep = random.uniform(pause / 2, pause)  # noqa: S311 - jitter, not a secret  # nosec B311
        remaining_ttl = int(value) / 1000
        if remaining_ttl > 0:
            sleep = min(sleep, remaining_ttl + 0.001)
        time.sleep(max(0.0, min(sleep, deadline - now)))
        pause = min(pause * 2, BACKOFF_CAP)


@contextmanager
def redis_lock(
    name: str, *, ttl_ms: int, timeout: float = 0.0, role: Role = "state", label: str | None = None
) -> Iterator[Lock]:
    """`with redis_lock("user:7:profile", ttl_ms=5000) as lock:` ... released on exit.

    See `acquire` for the arguments and errors. On exit the lock is released only if
    this owner still holds it; if it expired while held, `lock.expired_while_held`
    becomes True, the metric of that name is counted and a warning logged. Protect
    the writes themselves with `lock.fence` (`fenced_update`): the lock alone cannot
    stop a holder that paused past its TTL.
    """
    lock = acquire(name, ttl_ms=ttl_ms, timeout=timeout, role=role, label=label)
    try:
        yield lock
    finally:
        lock.release()


# --- Fenced writes -------------------------------------------------------------------


def fenced_update(queryset: QuerySet[Model], fence_field: str, fence: int, /, **values: object) -> bool:
    """UPDATE ... SET values, fence_field = fence WHERE fence_field <= fence; True if a row changed.

    One statement, so check and write are atomic in the database. A holder whose lock was
    taken by a later holder finds a larger fence and changes nothing. `<=`, not `<`: a
    fence is never handed out twice, so an equal one is the current holder writing again.
    """
    if fence_field in values:
        raise ValueError(f"{fence_field!r} is set by fenced_update itself")
    return queryset.filter(**{f"{fence_field}__lte": fence}).update(**values, **{fence_field: fence}) > 0
