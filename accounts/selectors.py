"""Reads of the accounts app."""

from __future__ import annotations

from accounts import keys
from accounts.models import User
from core import cacheaside

USER = cacheaside.register(
    cacheaside.Family("user", keys.user_profile, ttl=keys.USER_TTL, missing_ttl=keys.USER_MISSING_TTL, l1_ttl=5.0)
)


def user_me(*, user: User) -> dict:
    """What /api/me returns: the article's userId and email, plus the handle."""
    return {"userId": user.pk, "email": user.email, "username": user.username, "isStaff": user.is_staff}


def user_to_profile(user: User) -> dict:
    return {
        "id": user.pk,
        "username": user.username,
        "name": user.name,
        "bio": user.bio,
        "dateJoined": user.date_joined.isoformat(),
    }


def user_profile(*, user_id: int) -> dict | None:
    """A public profile (cache-aside: L1, Redis, then the database), None if no such user."""
    return cacheaside.get_or_load(USER, user_id, lambda: _load_profile(user_id))


def _load_profile(user_id: int) -> dict | None:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    return user_to_profile(user) if user is not None else None


def user_by_username(*, username: str) -> User | None:
    return User.objects.filter(username__iexact=username, is_active=True).first()
