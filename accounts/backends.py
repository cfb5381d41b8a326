"""Who an authenticated request is: log-in by email, and the request's user from this
process's memory (AUTH_USER, an L1 of user rows: never Redis) instead of a query.

A copy is used only while it is at least at the token epoch the request read from
Redis anyway (keys.user_token_epoch); other changes to a row drop it in every process
through the invalidation bus (accounts.signals). A request that read no epoch loads
the row from the database. Each request gets its own User built from the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.db import router
from django.http import HttpRequest

from accounts.models import User
from accounts.selectors import USER
from core import cacheaside

# Seconds a user's row stays in a process's memory: how long a change only the bus
# carries (staff rights, an email) can outlive a lost message. Revocation never waits.
USER_L1_TTL = 30.0
# Users per process; past it the least recently seen is dropped and read again.
USER_L1_MAX = 10_000

# The row as a tuple of every concrete column, in model order (User.from_db's fast path).
_COLUMNS = tuple(f.attname for f in User._meta.concrete_fields)
_EPOCH = _COLUMNS.index("token_epoch")

# Local only (ttl 0): a user row never goes to Redis. Dropped by the "user" family's
# invalidations too (a profile edit writes name and bio with an UPDATE, no signal).
AUTH_USER = cacheaside.register(
    cacheaside.Family(
        "auth_user", str, ttl=0, l1_ttl=USER_L1_TTL, l1_max_entries=USER_L1_MAX, dropped_with=(USER.name,)
    )
)


def mirrored_epoch(raw: bytes | None) -> int | None:
    """A user's token epoch as Redis's mirror holds it (keys.user_token_epoch): 0 when
    the key is missing (no bump within the longest token life), None when it holds
    something else (then nothing is known: read the database)."""
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        return None


def user_get(*, user_id: int, epoch: int | None, clock: Callable[[], float] = time.monotonic) -> User | None:
    """A new User instance of `user_id` (active or not), None if there is no such user.

    From this process's L1 when its copy is at least at `epoch`, the user's token epoch
    as this request read it from Redis; else, and with `epoch` None (none read), from
    the database, refilling the L1. Cache-role failures cost nothing here: without
    the invalidation bus the L1 is not used and every call reads the database.
    """

    def fresh(row: tuple) -> bool:
        return epoch is not None and row[_EPOCH] >= epoch

    row = cacheaside.get_or_load_local(AUTH_USER, user_id, lambda: _load_row(user_id), fresh=fresh, clock=clock)
    if row is None:
        return None
    return User.from_db(router.db_for_read(User), _COLUMNS, row)


def _load_row(user_id: int) -> tuple | None:
    return User.objects.filter(pk=user_id).values_list(*_COLUMNS).first()


# The token epoch this request read from Redis along with its session, for the
# session's user lookup (EmailBackend.get_user, called by django.contrib.auth with the
# user id alone). Set by every session load, taken by the lookup.
_session_epoch: ContextVar[tuple[int, int | None] | None] = ContextVar("kestrel_session_epoch", default=None)


def session_epoch_seen(*, user_id: int | None, epoch: int | None) -> None:
    """Record what this request's session read said of its user's token epoch (None:
    nothing read). Each session load records, so no value survives into another
    request's lookup."""
    _session_epoch.set(None if user_id is None else (user_id, epoch))


def _session_epoch_taken(user_id: int) -> int | None:
    seen = _session_epoch.get()
    _session_epoch.set(None)
    return seen[1] if seen is not None and seen[0] == user_id else None


class EmailBackend(ModelBackend):
    """Log in with an email address, any case; never with a username (a public handle).

    The admin's log-in form posts the email as "username" (USERNAME_FIELD stays the
    handle), read here as the email it is. A session's user comes from user_get, checked
    against the epoch its session read returned (accounts.sessions).
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        email: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        address = email if email is not None else username
        if not address or password is None:
            return None
        user = User.objects.filter(email__iexact=address.strip()).first()
        if user is None:
            # Hash anyway so a missing account takes as long as a wrong password.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None

    def get_user(self, user_id: Any) -> User | None:
        user = user_get(user_id=user_id, epoch=_session_epoch_taken(user_id))
        return user if user is not None and self.user_can_authenticate(user) else None
