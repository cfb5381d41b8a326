"""Reads of the accounts app: public profiles, the follow graph, who a request counts as.

Profiles are cache-aside (core.cacheaside, family "user"); the follow graph is read
from its Redis mirror (sets on the cache role), rebuilt from accounts.Follow when
missing. Cache role throughout: every read fails open to the database.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db.models import QuerySet

from accounts import keys
from accounts.models import Follow, User
from core import cacheaside, metrics
from core.batching import chunks
from core.rebuild import Lease, rebuild
from core.redis import RedisClient, RedisPipeline, fail_open, get_redis

logger = logging.getLogger(__name__)

# Public profiles: L1 5 s, Redis keys.USER_TTL, a missing user keys.USER_MISSING_TTL.
USER = cacheaside.register(
    cacheaside.Family("user", keys.user_profile, ttl=keys.USER_TTL, missing_ttl=keys.USER_MISSING_TTL, l1_ttl=5.0)
)


def user_me(*, user: User) -> dict:
    """What /api/me returns: {"userId", "email", "username", "isStaff"}."""
    return {"userId": user.pk, "email": user.email, "username": user.username, "isStaff": user.is_staff}


# The columns a cached profile is built from (user_to_profile, and is_active, which
# decides whether there is one): a save that writes none of them leaves it as it is.
PROFILE_FIELDS = frozenset({"username", "name", "bio", "date_joined", "is_active"})


def user_to_profile(user: User) -> dict:
    """The public profile of `user` as the API shows it, and as the "user" family caches it."""
    return {
        "id": user.pk,
        "username": user.username,
        "name": user.name,
        "bio": user.bio,
        "dateJoined": user.date_joined.isoformat(),
    }


def user_profile(*, user_id: int) -> dict | None:
    """A public profile, None if there is no such active user.

    Cache-aside (core.cacheaside): this process's L1, then Redis (keys.user_profile,
    USER_TTL, cache role), then the database. Fails open to the database.
    """
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
# accounts.Follow is the truth; the cache role mirrors it per user in two SETs, each with
# a marker member so that a built empty set exists. Missing sets are rebuilt here under a
# lease; follows update built sets after commit (accounts.services.follow_mirror_update).

FOLLOWERS = cacheaside.register(cacheaside.Family("followers", keys.user_followers, ttl=keys.FOLLOW_SET_TTL))
FOLLOWING = cacheaside.register(cacheaside.Family("following", keys.user_following, ttl=keys.FOLLOW_SET_TTL))
# (Registered for the invalidation outbox only: a follow that could not reach Redis
# drops both sets through core.cacheaside.invalidate_now, replayed until it lands.)

SADD_CHUNK = 1_000  # members per SADD when a rebuild stores a big set
_MARKER = keys.FOLLOW_SET_MARKER.encode()
_GRAPH_UNAVAILABLE = "Cache role unavailable reading the follow graph; using the database"


@dataclass(frozen=True)
class _Mirror:
    """One side of the follow graph's mirror: its family (key builder, TTL), the key
    builder of its rebuild lease, and the ids its set holds, as a database query."""

    family: cacheaside.Family
    lease_key: Callable[[int], str]
    ids: Callable[[int], QuerySet[Follow, int]]

    def key(self, user_id: int) -> str:
        return self.family.key(user_id)


_FOLLOWERS_MIRROR = _Mirror(
    FOLLOWERS,
    keys.user_followers_rebuild,
    lambda user_id: Follow.objects.filter(followee_id=user_id).values_list("follower_id", flat=True),
)
_FOLLOWING_MIRROR = _Mirror(
    FOLLOWING,
    keys.user_following_rebuild,
    lambda user_id: Follow.objects.filter(follower_id=user_id).values_list("followee_id", flat=True),
)


def follow_exists(*, follower_id: int, followee_id: int) -> bool:
    """Whether `follower_id` follows `followee_id`: one SMISMEMBER on the follower's set.

    The follower's set, not the followee's: people follow hundreds, the popular are
    followed by millions, and a rebuild costs what the set holds. Fails open to the
    database (cache role).
    """
    if follower_id == followee_id:
        return False
    return followee_id in follows_among(follower_id=follower_id, user_ids=[followee_id])


def follows_among(*, follower_id: int, user_ids: list[int]) -> set[int]:
    """Which of `user_ids` `follower_id` follows: one SMISMEMBER on the follower's set, as
    follow_exists (a page of people with their follow buttons). Fails open to the database."""
    if not user_ids:
        return set()
    client = get_redis("cache")
    ids: set[int] | None = None
    # Cache role: the database answers; the page is slower, not wrong.
    with fail_open("cache.error", _GRAPH_UNAVAILABLE, log=logger, family=FOLLOWING.name):
        built, *members = client.smismember(_FOLLOWING_MIRROR.key(follower_id), [keys.FOLLOW_SET_MARKER, *user_ids])
        if built:
            metrics.incr("cache.hit", family=FOLLOWING.name, tier="redis")
            return {user_id for user_id, member in zip(user_ids, members, strict=True) if member}
        ids = _rebuild(client, _FOLLOWING_MIRROR, follower_id)
    if ids is None:
        ids = set(
            Follow.objects.filter(follower_id=follower_id, followee_id__in=user_ids).values_list(
                "followee_id", flat=True
            )
        )
    return ids & set(user_ids)


def follow_counts(*, user_id: int) -> dict[str, int]:
    """{"followers": n, "following": m}: two SCARDs in one round trip (minus the markers).

    A missing set is rebuilt; fails open to COUNT queries (cache role).
    """
    client = get_redis("cache")
    counts: dict[str, int] = {}
    # Cache role: the database answers; the page is slower, not wrong.
    with fail_open("cache.error", _GRAPH_UNAVAILABLE, log=logger, family=FOLLOWERS.name):
        pipe = client.pipeline(transaction=False)
        pipe.scard(_FOLLOWERS_MIRROR.key(user_id))
        pipe.scard(_FOLLOWING_MIRROR.key(user_id))
        stored = pipe.execute()
        for name, mirror, cardinality in (
            ("followers", _FOLLOWERS_MIRROR, stored[0]),
            ("following", _FOLLOWING_MIRROR, stored[1]),
        ):
            if cardinality:  # a built set always holds its marker: 0 means missing
                metrics.incr("cache.hit", family=mirror.family.name, tier="redis")
                counts[name] = cardinality - 1
                continue
            ids = _rebuild(client, mirror, user_id)
            if ids is not None:
                counts[name] = len(ids)
    if "followers" not in counts:
        counts["followers"] = _FOLLOWERS_MIRROR.ids(user_id).count()
    if "following" not in counts:
        counts["following"] = _FOLLOWING_MIRROR.ids(user_id).count()
    return counts


def follower_ids(*, user_id: int) -> list[int]:
    """Every follower id of `user_id`, sorted, in one SMEMBERS: for most people's few followers.

    A big set in one reply blocks Redis and the caller: follower_id_batches scans it.
    Fails open to the database (cache role).
    """
    client = get_redis("cache")
    ids: set[int] | None = None
    # Cache role: the database answers; the page is slower, not wrong.
    with fail_open("cache.error", _GRAPH_UNAVAILABLE, log=logger, family=FOLLOWERS.name):
        members = client.smembers(_FOLLOWERS_MIRROR.key(user_id))
        if members:
            metrics.incr("cache.hit", family=FOLLOWERS.name, tier="redis")
            return sorted(int(member) for member in members if member != _MARKER)
        ids = _rebuild(client, _FOLLOWERS_MIRROR, user_id)
    return sorted(ids if ids is not None else _FOLLOWERS_MIRROR.ids(user_id))


def follower_id_batches(*, user_id: int, size: int) -> Iterator[list[int]]:
    """Every follower id of `user_id` once, in lists of at most `size`.

    From the mirror by SSCAN (COUNT `size`), skipping the ids SSCAN repeats; after a
    rebuild, from the ids it loaded; with Redis away, from the database by keyset pages.
    """
    client = get_redis("cache")
    built, ids = False, None
    # Cache role: the database answers; the fan-out is slower, not wrong.
    with fail_open("cache.error", _GRAPH_UNAVAILABLE, log=logger, family=FOLLOWERS.name):
        built = bool(client.exists(_FOLLOWERS_MIRROR.key(user_id)))
        ids = None if built else _rebuild(client, _FOLLOWERS_MIRROR, user_id)

    if built:
        metrics.incr("cache.hit", family=FOLLOWERS.name, tier="redis")
        yield from _scan_batches(client, _FOLLOWERS_MIRROR.key(user_id), size)
    elif ids is not None:
        yield from map(list, chunks(sorted(ids), size))
    else:
        yield from _database_batches(user_id, size)


def _scan_batches(client: RedisClient, key: str, size: int) -> Iterator[list[int]]:
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


def _rebuild(client: RedisClient, mirror: _Mirror, user_id: int) -> set[int] | None:
    """Store `user_id`'s set from the database (core.rebuild, under the mirror's lease).

    The ids stored, or None when another process holds the lease or a follow deleted
    it during the read (our copy may predate that follow): the caller then asks the
    database. Redis errors propagate to the caller's fail_open.
    """
    metrics.incr("cache.miss", family=mirror.family.name)
    set_key = mirror.key(user_id)

    def store(pipe: RedisPipeline, ids: set[int]) -> None:
        pipe.delete(set_key)
        pipe.sadd(set_key, keys.FOLLOW_SET_MARKER)
        for chunk in chunks(sorted(ids), SADD_CHUNK):
            pipe.sadd(set_key, *chunk)
        # Jittered, so sets built together (after a restart) are not rebuilt together.
        pipe.expire(set_key, round(keys.FOLLOW_SET_TTL * random.uniform(0.9, 1.1)))  # noqa: S311 - jitter, not crypto  # nosec B311

    rebuilt = rebuild(
        client,
        family=mirror.family.name,
        load=lambda: set(mirror.ids(user_id).iterator(chunk_size=10_000)),
        store=store,
        lease=Lease(mirror.lease_key(user_id), ttl_ms=keys.FOLLOW_REBUILD_LEASE_MS),
    )
    return rebuilt.value if rebuilt.stored else None


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
