"""Cache invalidation for users: any save or delete, from any code path, and epoch bumps.

Receivers only invalidate (core.cacheaside.invalidate, after commit): the public
profile ("user"), the user row each process keeps (AUTH_USER) and follow sets.
"""

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from accounts.backends import AUTH_USER
from accounts.models import Follow, User
from accounts.selectors import FOLLOWERS, FOLLOWING, PROFILE_FIELDS, USER
from accounts.tokens import credentials_revoked
from core.cacheaside import invalidate

# Columns a cached copy may hold stale.
UNCACHED_FIELDS = frozenset({"last_login"})


@receiver(post_save, sender=User, dispatch_uid="accounts.user_saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.user_deleted")
def drop_cached_profile(
    sender: type[User], instance: User, update_fields: frozenset[str] | None = None, **kwargs: Any
) -> None:
    """Drop the cached profile when a column it shows may have changed (or the user went),
    else only the user row each process keeps; a save of last_login alone drops nothing.

    A save without update_fields and a delete always drop the profile, and with it the
    AUTH_USER copies (dropped_with).
    """
    if update_fields is not None and set(update_fields) <= UNCACHED_FIELDS:
        return
    if update_fields is not None and not PROFILE_FIELDS.intersection(update_fields):
        invalidate(AUTH_USER.name, instance.pk)
    else:
        invalidate(USER.name, instance.pk)


@receiver(credentials_revoked, sender=User, dispatch_uid="accounts.user_epoch_bumped")
def drop_cached_user_row(sender: type[User], user_id: int, **kwargs: Any) -> None:
    """After an epoch bump (an UPDATE: no post_save), drop every process's copy of the user
    row: this also covers a mirror write that failed."""
    invalidate(AUTH_USER.name, user_id)


# Neighbours whose follow sets name a deleted user: past this many, the sets' TTL
# (24 h) clears the rest rather than one invalidation each inside a delete.
NEIGHBOURS_INVALIDATED_MAX = 10_000


@receiver(pre_delete, sender=User, dispatch_uid="accounts.user_deleting")
def drop_neighbours_follow_sets(sender: type[User], instance: User, **kwargs: Any) -> None:
    """Before a user is deleted, drop their follow sets and up to NEIGHBOURS_INVALIDATED_MAX
    of each neighbour's set that names them (pre_delete: the cascade removes the rows)."""
    followers = Follow.objects.filter(followee=instance).values_list("follower_id", flat=True)
    followees = Follow.objects.filter(follower=instance).values_list("followee_id", flat=True)
    for user_id in followers[:NEIGHBOURS_INVALIDATED_MAX]:
        invalidate(FOLLOWING.name, user_id)
    for user_id in followees[:NEIGHBOURS_INVALIDATED_MAX]:
        invalidate(FOLLOWERS.name, user_id)
    invalidate(FOLLOWERS.name, instance.pk)
    invalidate(FOLLOWING.name, instance.pk)
