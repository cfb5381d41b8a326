"""Session engine: Django's cache sessions on the state role, with Kestrel's keys.

Differences from django.contrib.sessions.backends.cache, each for a reason:
- keys come from accounts.keys.session (kestrel:accounts:session:<id>);
- a Redis outage raises instead of reading as "no session": Django's store swallows
  every error on load, which would silently log everyone out and then fail on save;
- saving an existing session is one atomic `SET ... XX` instead of GET then SET, so
  a logout racing a request cannot resurrect the session.
"""

from __future__ import annotations

from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from accounts import keys


class SessionStore(CacheSessionStore):
    @property
    def cache_key(self) -> str:
        return keys.session(self._get_or_create_session_key())

    def load(self) -> dict:
        session_data = self._cache.get(self.cache_key)
        if session_data is not None:
            return session_data
        self._session_key = None
        return {}

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key) and self._cache.has_key(keys.session(session_key))

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        if must_create:
            if not self._cache.add(self.cache_key, data, self.get_expiry_age()):
                raise CreateError
        elif not self._cache.set(self.cache_key, data, self.get_expiry_age(), xx=True):
            raise UpdateError

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        self._cache.delete(keys.session(session_key))

    @classmethod
    def clear_expired(cls) -> None:
        pass  # Redis expires sessions by TTL
