"""Session engine: Django's cache sessions on the state role, with Kestrel's keys.

Keys: accounts.keys.session, TTL the session's age. A Redis outage raises instead of
reading as "no session"; saving is one atomic SET XX, so a logout racing a request
cannot resurrect the session. Each process remembers whose a session is (a hint, never
trusted alone), so that the rate limiter's script reads it with the user's token epoch
(session_rate_limit_credential, accounts.revocation), or one MGET when no script runs.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.core.cache import caches
from django.http import HttpRequest

from accounts import keys, revocation
from accounts.backends import mirrored_epoch, session_epoch_seen
from core.l1 import MISS, LocalCache
from core.ratelimit.guard import Credential, GuardVerdict

if TYPE_CHECKING:
    from django_redis.cache import RedisCache

# Sessions per process whose user is remembered; past it the least recently used is
# forgotten, and its next request reads the session in a round trip of its own again.
USER_HINTS_MAX = 10_000

# Session key -> user id, learnt whenever this process reads or writes a session. Safe
# as a hint because Django never moves a session key to another user (a log-in cycles
# the key, a log-out deletes it), and because the rate limiter's script still checks
# that the session exists: a session deleted by another process counts as anonymous.
_user_hints = LocalCache(max_entries=USER_HINTS_MAX)


def _hint_user(session_key: str | None, data: dict | None) -> None:
    if not session_key:
        return
    user_id = (data or {}).get(SESSION_KEY)
    if isinstance(user_id, str) and user_id.isdigit():
        _user_hints.set(session_key, int(user_id), ttl=settings.SESSION_COOKIE_AGE, now=time.monotonic())
    else:
        _user_hints.delete(session_key)


def session_user_hint(session_key: str) -> int | None:
    """The user this process last saw `session_key` belong to, or None."""
    user_id = _user_hints.get(session_key, time.monotonic())
    return None if user_id is MISS else user_id


def forget_user_hints() -> None:
    """Forget every session's user (for tests)."""
    _user_hints.clear()


class SessionStore(CacheSessionStore):
    """Django's cache session store with Kestrel's keys; every override reads the store
    through `self.store` (the SESSION_CACHE_ALIAS cache), not the parent's private `_cache`."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # django-redis's RedisCache (settings.CACHES): its raw client and SET XX are used here.
        self.store: RedisCache = caches[settings.SESSION_CACHE_ALIAS]

    @property
    def cache_key(self) -> str:
        # SessionBase's own helper, which the stubs leave out.
        return keys.session(self._get_or_create_session_key())  # type: ignore[attr-defined]

    def redis_key(self, session_key: str) -> str:
        """The key Redis holds session `session_key` under, as the cache backend writes it."""
        return str(self.store.make_key(keys.session(session_key)))

    def is_loaded(self) -> bool:
        return hasattr(self, "_session_cache")

    def load(self) -> dict[str, Any]:
        session_key = self.session_key
        user_id = session_user_hint(session_key) if session_key else None
        if not session_key or user_id is None:
            session_data = self.store.get(self.cache_key)
            _seen_epoch(session_data, user_id=None, raw_epoch=None)
        else:
            # A session whose user this process knows: its user's token epoch in the
            # same round trip. Two hash slots (the session's, the user's): one MGET on
            # one server; Redis Cluster needs it split by slot (docs/design.md, "The key grammar").
            raw, raw_epoch = self.store.client.get_client().mget(
                [self.redis_key(session_key), keys.user_token_epoch(user_id)]
            )
            session_data = None if raw is None else self.store.client.decode(raw)
            _seen_epoch(session_data, user_id=user_id, raw_epoch=raw_epoch)
        if session_data is not None:
            _hint_user(self.session_key, session_data)
            return session_data
        _hint_user(self.session_key, None)
        self._session_key = None
        return {}

    def preload(self, data: dict | None) -> None:
        """Take the session's data as read elsewhere (None: no such session), so that
        loading it costs no round trip. Does nothing once the session is loaded."""
        if self.is_loaded():
            return
        _hint_user(self.session_key, data)
        if data is None:
            self._session_key = None  # as load() does for a session that is gone
            data = {}
        self._session_cache = data

    def preload_verdict(self, verdict: GuardVerdict, *, user_id: int) -> None:
        """The rate limiter's on_verdict: the session its script read (the guard's
        required key) and `user_id`'s token epoch (its generation key)."""
        if self.is_loaded():
            return
        value = verdict.value
        data = None if value is None else self.store.client.decode(value)
        _seen_epoch(data, user_id=user_id, raw_epoch=verdict.generation_value)
        self.preload(data)

    def exists(self, session_key: str | None) -> bool:
        if not session_key:
            return False
        return bool(self.store.has_key(keys.session(session_key)))

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        # SessionBase's own helper, which the stubs leave out.
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]
        if must_create:
            if not self.store.add(self.cache_key, data, self.get_expiry_age()):
                raise CreateError
        elif not self.store.set(self.cache_key, data, self.get_expiry_age(), xx=True):
            raise UpdateError
        _hint_user(self.session_key, data)

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self.store.delete(keys.session(session_key))
        _hint_user(session_key, None)

    @classmethod
    def clear_expired(cls) -> None:
        pass  # Redis expires sessions by TTL


def _seen_epoch(data: dict | None, *, user_id: int | None, raw_epoch: bytes | None) -> None:
    """Tell the user lookup what this read said of the session user's token epoch:
    only when the session is `user_id`'s, whose epoch key was read with it."""
    if user_id is None or data is None or data.get(SESSION_KEY) != str(user_id):
        session_epoch_seen(user_id=None, epoch=None)
    else:
        session_epoch_seen(user_id=user_id, epoch=mirrored_epoch(raw_epoch))


def session_rate_limit_credential(request: HttpRequest) -> Credential | None:
    """Who a session request is, for the rate limiter, without reading the session first.

    Only for a session whose user this process knows: the limiter's script checks the
    session exists and returns its data and the user's token epoch, handed to the request's
    store so authentication reads no Redis. None otherwise (the limiter loads it as usual).
    State role, fails closed like any guard.
    """
    store = getattr(request, "session", None)
    if not isinstance(store, SessionStore) or not store.session_key or store.is_loaded():
        return None
    session_key = store.session_key
    user_id = session_user_hint(session_key)
    if user_id is None:
        return None
    guard = revocation.session_guard(redis_key=store.redis_key(session_key), user_id=user_id)
    return Credential(
        user_id=user_id, guard=guard, on_verdict=functools.partial(store.preload_verdict, user_id=user_id)
    )
