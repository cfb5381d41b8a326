"""Reads of the accounts app."""

from __future__ import annotations

from accounts.models import User


def user_me(*, user: User) -> dict:
    """What /api/me returns: the article's userId and email, plus the handle."""
    return {"userId": user.pk, "email": user.email, "username": user.username, "isStaff": user.is_staff}
