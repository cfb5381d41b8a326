"""Writes of the accounts app: sign-up, passwords, log out everywhere, profiles, the follow mirror.

Cache invalidations and Redis mirrors run after commit. The profile lock is on the
state role and fails closed (503); the follow graph's mirror is on the cache role and
a write it misses drops the sets instead (core.cacheaside's invalidation outbox).
"""

from __future__ import annotations

import functools
import logging

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from redis.commands.core import Script

from accounts import keys, tokens
from accounts.models import User
from accounts.selectors import FOLLOWERS, FOLLOWING, USER
from core.cacheaside import invalidate, invalidate_now
from core.commit import after_commit
from core.locks import LockNotAcquired, fenced_update, redis_lock
from core.redis import get_redis, is_unavailable
from core.scripts import script_queue
from jobs.services import email_enqueue

logger = logging.getLogger(__name__)


def user_signup_errors(*, email: str | None, username: str | None, password: str | None) -> dict[str, list[str]]:
    """Every reason a sign-up with these values is refused, by field, all in one pass.

    An email or username taken in any case, a value the model refuses, a password the
    configured AUTH_PASSWORD_VALIDATORS refuse. A value given as None is not checked:
    the sign-up form and the API pass None for a field their own checks already
    refused, so one answer still names the other fields' problems.
    """
    user = _unsaved_user(email=email or "", username=username or "")
    errors: dict[str, list[str]] = {}
    if email is not None and User.objects.filter(email__iexact=user.email).exists():
        errors["email"] = ["A user with that email already exists."]
    if username is not None and User.objects.filter(username__iexact=user.username).exists():
        errors["username"] = ["A user with that username already exists."]
    unchecked = ["password"] + [name for name, value in {"email": email, "username": username}.items() if value is None]
    try:
        # Uniqueness was checked above with friendlier, case-insensitive messages.
        user.full_clean(exclude=unchecked, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    if password is not None:
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            errors["password"] = list(exc.messages)
    return errors


def _unsaved_user(*, email: str, username: str) -> User:
    # Emails compare in lower case, usernames as typed without the spaces around them.
    return User(email=User.objects.normalize_email(email).strip().lower(), username=username.strip())


def user_create(*, email: str, username: str, password: str, is_staff: bool = False) -> User:
    """Create a user and queue their welcome mail after commit.

    ValidationError with every problem at once, per field (user_signup_errors); the
    database's case-insensitive constraints settle two sign-ups racing. Nothing is
    written when any value is refused.
    """
    errors = user_signup_errors(email=email, username=username, password=password)
    if errors:
        raise ValidationError(errors)
    user = _unsaved_user(email=email, username=username)
    user.is_staff = is_staff
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
            # Queued after commit: a sign-up that rolls back sends no welcome.
            email_enqueue(
                to=user.email,
                subject="Welcome to Kestrel",
                body=f"Hello {user.username}, welcome to Kestrel!",
                owner=user,
                requested=False,  # Kestrel's own mail, not one the person asked for
            )
    except IntegrityError:
        raise ValidationError({"email": ["A user with that email or username already exists."]}) from None
    return user


def user_tokens_revoke_all(*, user: User) -> int:
    """Log out everywhere: every token and session of the user is refused from now on, in O(1).

    Bumps User.token_epoch in the database (the truth) and, after commit, its Redis
    mirror (keys.user_token_epoch) and the credentials_revoked signal. Sessions end
    through the session hash, which mixes the epoch in. Returns the new epoch, also
    set on `user`.
    """
    with transaction.atomic():
        # An UPDATE, never a save() of a possibly stale row: two concurrent bumps both count.
        User.objects.filter(pk=user.pk).update(token_epoch=F("token_epoch") + 1)
        user.token_epoch = User.objects.values_list("token_epoch", flat=True).get(pk=user.pk)
        after_commit(tokens.token_epoch_publish, user_id=user.pk, epoch=user.token_epoch)
        # Open notification streams end now, not at their next timed check.
        after_commit(tokens.credentials_revoked.send, sender=User, user_id=user.pk, epoch=user.token_epoch)
    return user.token_epoch


def user_change_password(*, user: User, old_password: str, new_password: str) -> User:
    """Change a password; ValidationError per field ("old", "new").

    The save logs the user out everywhere (User.save does for every password change);
    the caller keeps its own session with update_session_auth_hash.
    """
    if not user.check_password(old_password):
        raise ValidationError({"old": ["Your current password is not correct."]})
    try:
        password_validation.validate_password(new_password, user)
    except ValidationError as exc:
        raise ValidationError({"new": list(exc.messages)}) from None
    user.set_password(new_password)
    user.save(update_fields=["password"])
    return user


class ProfileBeingUpdated(Exception):
    """Another edit of the same profile holds its lock, or overtook this one."""


def user_update_profile(*, user: User, name: str | None = None, bio: str | None = None) -> User:
    """Change the public profile; ValidationError per field, ProfileBeingUpdated while another edit runs.

    One edit per profile at a time, without waiting (keys.user_profile_lock, state role,
    fails closed), fenced so that an edit that outlived its lock cannot overwrite a later
    one. Call it outside a transaction, so that the lock covers the commit. The cached
    profile is dropped after commit.
    """
    values: dict[str, str] = {}
    if name is not None:
        values["name"] = name.strip()
    if bio is not None:
        values["bio"] = bio.strip()
    if not values:
        return user
    for field, value in values.items():
        setattr(user, field, value)
    user.full_clean(exclude=[f.name for f in User._meta.fields if f.name not in values])
    try:
        # State role, fail closed: if Redis does not answer, this raises, the API
        # answers 503 and nothing is written.
        with redis_lock(keys.user_profile_lock(user.pk), ttl_ms=keys.PROFILE_LOCK_TTL_MS) as lock:
            written = fenced_update(User.objects.filter(pk=user.pk), "profile_fence", lock.fence, **values)
    except LockNotAcquired:
        raise ProfileBeingUpdated from None
    if not written:
        # Our lock expired before the UPDATE ran and a later edit has already landed.
        raise ProfileBeingUpdated
    user.profile_fence = lock.fence
    # QuerySet.update() sends no post_save, so accounts.signals does not see this write.
    invalidate(USER.name, user.pk)
    return user


# --- The follow graph's Redis mirror -----------------------------------------------------
#
# Follows are feeds' writes (feeds.services), which call this after commit.


_MIRROR_UPDATE_LUA = """
-- KEYS: [1] one user's follow set (followers or following), [2] that set's rebuild lease
-- ARGV: [1] the member (the other user's id), [2] "1" to follow, "0" to unfollow
-- Only a set that exists changes: SADD on a missing set would create one holding just
-- this member, which readers would take for the whole set. Deleting the lease fails
-- the EXEC of any rebuild in flight, whose database read may predate this change.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[2] == '1' then redis.call('SADD', KEYS[1], ARGV[1]) else redis.call('SREM', KEYS[1], ARGV[1]) end
end
redis.call('DEL', KEYS[2])
return 1
"""


@functools.cache
def _mirror_update_script() -> Script:
    return get_redis("cache").register_script(_MIRROR_UPDATE_LUA)


def follow_mirror_update(*, follower_id: int, followee_id: int, added: bool) -> None:
    """Apply a committed follow (or unfollow) to both Redis sets: one round trip.

    Only built sets change, and both rebuild leases are deleted. One script call per
    user, each on that user's keys (one hash slot): the two sets need not change
    together, as each is checked against its own rebuild. Cache role: if Redis does
    not answer, both sets are dropped instead (invalidate_now, its outbox).
    """
    flag = 1 if added else 0
    try:
        pipe = get_redis("cache").pipeline(transaction=False)
        script_queue(
            pipe,
            _mirror_update_script(),
            [
                ([keys.user_followers(followee_id), keys.user_followers_rebuild(followee_id)], [follower_id, flag]),
                ([keys.user_following(follower_id), keys.user_following_rebuild(follower_id)], [followee_id, flag]),
            ],
        )
        pipe.execute()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # Cache role: the follow is committed, the mirror is what may now be wrong. Drop
        # both sets; if Redis still does not answer, the invalidation outbox drops them
        # once it does, and the next read rebuilds them from the database.
        logger.warning("Follow %s -> %s not mirrored (%s); dropping both sets", follower_id, followee_id, exc)
        invalidate_now(FOLLOWERS.name, followee_id)
        invalidate_now(FOLLOWING.name, follower_id)
