"""Reads of the accounts app."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db.models import QuerySet
from redis.exceptions import WatchError

from accounts import keys
from accounts.models import Follow, User
from core import cacheaside, metrics
from core.redis import UNAVAILABLE_ERRORS, get_redis

logger = logging.getLogger(__name__)

USER = cacheaside.register(
    cacheaside.Family("user", keys.user_profile, ttl=keys.USER_TTL, missing_ttl=keys.USER_MISSING_TTL, l1_ttl=5.0)
)


def user_me(*, user: User) -> dict:
    """What /api/me returns: the article's userId and email, plus the handle."""
    return {"userId": user.pk, "email": user.email, "username": user.username, "isStaff": user.is_staff}


# The columns a cached profile is built from (user_to_profile, and is_active, which
# decides whether there is one): a save that writes none of them leaves it as it is.
PROFILE_FIELDS = frozenset({"username", "name", "bio", "date_joined", "is_active"})


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


def user_profiles(*, user_ids: list[int]) -> list[dict | None]:
    """Public profiles in the order of `user_ids`, None for no such (active) user: the L1,
    one MGET, one query for the misses."""
    return cacheaside.get_many(USER, user_ids, _load_profiles)


def _load_profile(user_id: int) -> dict | None:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    return user_to_profile(user) if user is not None else None


def _load_profiles(user_ids: list[int]) -> dict[int, dict]:
    return {user.pk: user_to_profile(user) for user in User.objects.filter(pk__in=user_ids, is_active=True)}


def user_by_username(*, username: str) -> User | None:
    return User.objects.filter(username__iexact=username, is_active=True).first()


def user_rate_limit_account(*, user_id: int, user: User | None = None) -> str | None:
    """settings.KESTREL_RATE_LIMIT_USER_ACCOUNT: the account the log-in limits count a
    signed-in person under on a password change: their email, as their log-ins name it.

    Costs nothing when the session already loaded `user` (the view reuses it); a bearer
    request costs one primary-key query, as its token carries only the user's id.
    """
    if user is not None:
        return user.email
    return User.objects.filter(pk=user_id).values_list("email", flat=True).first()


# --- The follow graph -----------------------------------------------------------------
#
# The database (accounts.Follow) is the truth; Redis holds a mirror on the cache role:
# per user, a SET of follower ids and a SET of followee ids, each with a marker member
# so that a built set of nobody still exists (Redis deletes empty sets) and a missing
# key always means "rebuild". Writes keep built sets current after commit
# (accounts.services); a missing set is rebuilt here, under a lease that those writes
# delete, so a rebuild whose database read predates a follow never stores its result.
#
# Failure policy: cache role, so every read fails open to the database.

FOLLOWERS = cacheaside.register(cacheaside.Family("followers", keys.user_followers, ttl=keys.FOLLOW_SET_TTL))
FOLLOWING = cacheaside.register(cacheaside.Family("following", keys.user_following, ttl=keys.FOLLOW_SET_TTL))
# (Registered for the invalidation outbox only: a follow that could not reach Redis
# drops both sets through core.cacheaside.invalidate_now, replayed until it lands.)

SADD_CHUNK = 1_000  # members per SADD when a rebuild stores a big set
_MARKER = keys.FOLLOW_SET_MARKER.encode()


@dataclass(frozen=True)
class _Mirror:
    family: cacheaside.Family
    lease: Callable[[int], str]
    ids: Callable[[int], QuerySet]  # the ids the set holds, from the database

    def key(self, user_id: int) -> str:
        return self.family.key(user_id)


_FOLLOWERS = _Mirror(
    FOLLOWERS,
    keys.user_followers_rebuild,
    lambda user_id: Follow.objects.filter(followee_id=user_id).values_list("follower_id", flat=True),
)
_FOLLOWING = _Mirror(
    FOLLOWING,
    keys.user_following_rebuild,
    lambda user_id: Follow.objects.filter(follower_id=user_id).values_list("followee_id", flat=True),
)


def follow_exists(*, follower_id: int, followee_id: int) -> bool:
    """Whether `follower_id` follows `followee_id`: one SMISMEMBER on the follower's set.

    The follower's set, not the followee's: people follow hundreds, the popular are
    followed by millions, and a rebuild costs what the set holds.
    """
    if follower_id == followee_id:
        return False
    client = get_redis("cache")
    try:
        built, member = client.smismember(_FOLLOWING.key(follower_id), [keys.FOLLOW_SET_MARKER, followee_id])
        if built:
            metrics.incr("cache.hit", family=FOLLOWING.name, tier="redis")
            return bool(member)
        ids = _rebuild(client, _FOLLOWING, follower_id)
    except UNAVAILABLE_ERRORS as exc:
        _fail_open(FOLLOWING, exc)
        ids = None
    if ids is None:
        return Follow.objects.filter(follower_id=follower_id, followee_id=followee_id).exists()
    return followee_id in ids


def follow_counts(*, user_id: int) -> dict:
    """{"followers": n, "following": m}: two SCARDs in one round trip (minus the markers)."""
    client = get_redis("cache")
    counts: dict[str, int] = {}
    try:
        pipe = client.pipeline(transaction=False)
        pipe.scard(_FOLLOWERS.key(user_id))
        pipe.scard(_FOLLOWING.key(user_id))
        stored = pipe.execute()
        for name, mirror, cardinality in (("followers", _FOLLOWERS, stored[0]), ("following", _FOLLOWING, stored[1])):
            if cardinality:  # a built set always holds its marker: 0 means missing
                metrics.incr("cache.hit", family=mirror.family.name, tier="redis")
                counts[name] = cardinality - 1
                continue
            ids = _rebuild(client, mirror, user_id)
            if ids is not None:
                counts[name] = len(ids)
    except UNAVAILABLE_ERRORS as exc:
        _fail_open(FOLLOWERS, exc)
    if "followers" not in counts:
        counts["followers"] = _FOLLOWERS.ids(user_id).count()
    if "following" not in counts:
        counts["following"] = _FOLLOWING.ids(user_id).count()
    return counts


def follower_ids(*, user_id: int) -> list[int]:
    """Every follower id of `user_id` in one SMEMBERS: for the few followers of most people.

    A big set in one reply blocks Redis and the caller; `follower_id_batches` scans it.
    """
    client = get_redis("cache")
    try:
        members = client.smembers(_FOLLOWERS.key(user_id))
        if members:
            metrics.incr("cache.hit", family=FOLLOWERS.name, tier="redis")
            return sorted(int(member) for member in members if member != _MARKER)
        ids = _rebuild(client, _FOLLOWERS, user_id)
    except UNAVAILABLE_ERRORS as exc:
        _fail_open(FOLLOWERS, exc)
        ids = None
    return sorted(ids if ids is not None else _FOLLOWERS.ids(user_id))


def follower_id_batches(*, user_id: int, size: int) -> Iterator[list[int]]:
    """Every follower id of `user_id` once, in lists of at most `size`.

    From the mirror by SSCAN (COUNT `size`): a million followers never travel in one
    reply, and Redis answers other clients between the calls. SSCAN may return a member
    twice (the set can rehash between calls), so ids already yielded are skipped.
    """
    client = get_redis("cache")
    try:
        built = client.exists(_FOLLOWERS.key(user_id))
        ids = None if built else _rebuild(client, _FOLLOWERS, user_id)
    except UNAVAILABLE_ERRORS as exc:
        _fail_open(FOLLOWERS, exc)
        built, ids = False, None

    if built:
        metrics.incr("cache.hit", family=FOLLOWERS.name, tier="redis")
        yield from _scan_batches(client, _FOLLOWERS.key(user_id), size)
    elif ids is not None:
        yield from _chunks(sorted(ids), size)
    else:
        yield from _database_batches(user_id, size)


def _scan_batches(client, key: str, size: int) -> Iterator[list[int]]:
    seen: set[int] = set()
    pending: list[int] = []
    cursor = 0
    while True:
        cursor, members = client.sscan(key, cursor, count=size)
        for member in members:
            if member == _MARKER:
                continue
            user_id = int(member)
            if user_id not in seen:
                seen.add(user_id)
                pending.append(user_id)
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
        if cursor == 0:
            break
    if pending:
        yield pending


def _database_batches(user_id: int, size: int) -> Iterator[list[int]]:
    # Keyset pagination on the (followee, id) index: each batch is one indexed range read.
    last = 0
    while True:
        rows = list(
            Follow.objects.filter(followee_id=user_id, pk__gt=last)
            .order_by("pk")
            .values_list("pk", "follower_id")[:size]
        )
        if not rows:
            return
        yield [follower for _, follower in rows]
        last = rows[-1][0]


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rebuild(client, mirror: _Mirror, user_id: int) -> set[int] | None:
    """Store `user_id`'s set from the database; the ids stored, or None if not stored.

    None when another process holds the rebuild lease (it is reading the same rows) or
    when a follow changed the set during our read: the follow deleted the lease we
    WATCH, and our copy may predate it. Either way the caller answers from the
    database and a later read rebuilds.
    """
    set_key, lease_key = mirror.key(user_id), mirror.lease(user_id)
    metrics.incr("cache.miss", family=mirror.family.name)
    if not client.set(lease_key, uuid.uuid4().hex, nx=True, px=keys.FOLLOW_REBUILD_LEASE_MS):
        metrics.incr("cache.wait", family=mirror.family.name)
        return None
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(lease_key)
            ids = set(mirror.ids(user_id).iterator(chunk_size=10_000))
            pipe.multi()
            pipe.delete(set_key)
            pipe.sadd(set_key, keys.FOLLOW_SET_MARKER)
            for chunk in _chunks(sorted(ids), SADD_CHUNK):
                pipe.sadd(set_key, *chunk)
            # Jittered, so sets built together (after a restart) are not rebuilt together.
            pipe.expire(set_key, round(keys.FOLLOW_SET_TTL * random.uniform(0.9, 1.1)))  # noqa: S311 - jitter, not crypto  # nosec B311
            pipe.delete(lease_key)
            pipe.execute()
    except WatchError:
        metrics.incr("cache.rebuild_raced", family=mirror.family.name)
        return None
    metrics.incr("cache.load", family=mirror.family.name)
    return ids


def _fail_open(family: cacheaside.Family, exc: Exception) -> None:
    # Cache role: fail open. The database answers; the page is slower, not wrong.
    metrics.incr("cache.error", family=family.name)
    logger.warning("Cache role unavailable reading the follow graph; using the database: %s", exc)


def _follow_page(rows: QuerySet, *, who: str, count: int, before: int | None) -> dict:
    if before is not None:
        rows = rows.filter(pk__lt=before)
    page = list(
        rows.order_by("-pk").values("pk", "created_at", f"{who}_id", f"{who}__username", f"{who}__name")[:count]
    )
    users = [
        {
            "id": row[f"{who}_id"],
            "username": row[f"{who}__username"],
            "name": row[f"{who}__name"],
            "followedAt": row["created_at"].isoformat(),
        }
        for row in page
    ]
    return {"users": users, "next": page[-1]["pk"] if len(page) == count else None}


def follower_list(*, user_id: int, count: int, before: int | None = None) -> dict:
    """A page of the people following `user_id`, newest follow first: {"users", "next"}.

    From the database: the mirror is an unordered set, and a page needs names anyway.
    `next` (the oldest follow's id on this page) is the `before` of the next page.
    """
    return _follow_page(Follow.objects.filter(followee_id=user_id), who="follower", count=count, before=before)


def following_list(*, user_id: int, count: int, before: int | None = None) -> dict:
    """A page of the people `user_id` follows, newest follow first: {"users", "next"}."""
    return _follow_page(Follow.objects.filter(follower_id=user_id), who="followee", count=count, before=before)
