"""The leaderboard: people ranked by the likes their posts received.

A sorted set on the cache role, rebuilt from the database whenever it is missing
(expired after LEADERBOARD_TTL, evicted, or never built) and kept current in between by
`leaderboard_like_queue`, which the like service runs after each commit.

Ordering is deterministic: most likes first, and among equal likes the lower user id
(the earlier account) first. Redis orders equal scores by the member's bytes, so the
score is *minus* the likes and the member is the user id zero-padded to 12 digits: an
ascending ZRANGE / ZRANK then reads most likes first and, within a score, ids in
numeric order. (With score = likes, ZREVRANGE would put the higher id first.) Scores
are doubles, exact for integers up to 2**53.

Failure policy: the cache role, so every function fails open. Writes log and drop the
update (the zset drifts until it expires or is rebuilt); reads compute the same
answer from the database.
"""

from __future__ import annotations

import functools
import logging
from typing import TypedDict

from django.db.models import Sum
from redis.commands.core import Script
from redis.exceptions import RedisError, WatchError

from accounts.selectors import user_profiles
from core.redis import get_redis, is_unavailable
from core.scripts import script_queue
from posts import keys
from posts.keys import LEADERBOARD_TTL
from posts.models import Post

logger = logging.getLogger(__name__)

REBUILD_ATTEMPTS = 3

# What a failing cache role raises; is_unavailable() tells "not answering" from a bug.
_REDIS_ERRORS = (RedisError, OSError)

_LIKE_CHANGED_LUA = """
-- KEYS: leaderboard zset, leaderboard version   ARGV: member, delta (likes), ttl (seconds)
-- Returns the member's new likes, or nil when the zset is missing.
-- The version moves on every like, even with the zset missing: a rebuild WATCHes it,
-- so a rebuild that read the database before this like cannot store its stale result.
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Nothing to update: the next reader rebuilds from the database, like included.
  -- (ZINCRBY here would create a one-member zset that readers take as complete.)
  return false
end
local likes = -tonumber(redis.call('ZINCRBY', KEYS[1], -tonumber(ARGV[2]), ARGV[1]))
if likes <= 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return likes
"""

_WINDOW_LUA = """
-- KEYS: leaderboard zset   ARGV: member, radius
-- Returns nil when the zset is missing; {} when the member is not on it; otherwise
-- {0-based rank of the window's first entry, {member, score, member, score, ...}}.
-- One script so that a like landing between ZRANK and ZRANGE cannot slide the
-- window off the person it is centred on.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
if not rank then
  return {}
end
local radius = tonumber(ARGV[2])
local first = math.max(rank - radius, 0)
return {first, redis.call('ZRANGE', KEYS[1], first, rank + radius, 'WITHSCORES')}
"""


class LeaderboardEntry(TypedDict):
    rank: int  # 1-based
    userId: int  # camelCase: the API's field name
    username: str | None  # None for an account deactivated or deleted since the zset was built
    likes: int


@functools.cache
def _like_changed_script() -> Script:
    return get_redis("cache").register_script(_LIKE_CHANGED_LUA)


@functools.cache
def _window_script() -> Script:
    return get_redis("cache").register_script(_WINDOW_LUA)


def _member(user_id: int) -> str:
    return f"{user_id:012d}"


def leaderboard_like_changed(*, author_id: int, delta: int) -> None:
    """Apply a like (+1) or unlike (-1) on one of `author_id`'s posts; call after commit."""
    try:
        _like_changed_script()(
            keys=[keys.leaderboard(), keys.leaderboard_version()],
            args=[_member(author_id), delta, LEADERBOARD_TTL],
            client=get_redis("cache"),
        )
    except _REDIS_ERRORS as exc:
        if not is_unavailable(exc):
            raise
        # Fail open: the like is committed; only the ranking misses it, until the zset
        # expires (LEADERBOARD_TTL) or is rebuilt.
        logger.warning("Leaderboard update for user %s skipped: cache Redis unavailable", author_id)


def leaderboard_like_queue(pipe, *, author_id: int, delta: int) -> None:
    """What leaderboard_like_changed does, queued in a caller's cache-role pipeline (a like's
    other cache updates go in the same round trip); the caller owns the failure policy."""
    args = [_member(author_id), delta, LEADERBOARD_TTL]
    script_queue(pipe, _like_changed_script(), [([keys.leaderboard(), keys.leaderboard_version()], args)])


def leaderboard_rebuild() -> None:
    """Rebuild the zset from the database (at most REBUILD_ATTEMPTS tries)."""
    try:
        _rebuild()
    except _REDIS_ERRORS as exc:
        if not is_unavailable(exc):
            raise
        logger.warning("Leaderboard rebuild skipped: cache Redis unavailable")


def _rebuild() -> list[tuple[int, int]]:
    """Store the database's ranking in the zset; returns that ranking (all of it).

    WATCH the version, read the database, then replace the zset in MULTI/EXEC. A like
    committed after our read bumps the version before EXEC (EXEC aborts: we read again)
    or after it (its delta applies to the zset we stored). Without the WATCH, a rebuild
    could overwrite the increment of a like that landed during its read.
    """
    board, version = keys.leaderboard(), keys.leaderboard_version()
    rows: list[tuple[int, int]] = []
    with get_redis("cache").pipeline() as pipe:
        for _attempt in range(REBUILD_ATTEMPTS):
            try:
                pipe.watch(version)
                rows = _likes_by_author()
                pipe.multi()
                pipe.delete(board)
                if rows:
                    pipe.zadd(board, {_member(user_id): -likes for user_id, likes in rows})
                    pipe.expire(board, LEADERBOARD_TTL)
                pipe.execute()
                return rows
            except WatchError:
                continue
    # Likes kept landing: leave the zset missing; the caller answers from `rows`,
    # which was right as of its read, and the next reader tries again.
    logger.info("Leaderboard rebuild gave up after %s attempts (likes kept arriving)", REBUILD_ATTEMPTS)
    return rows


def _likes_by_author(*, limit: int | None = None) -> list[tuple[int, int]]:
    """(user id, likes received) of everyone with likes, in leaderboard order."""
    ranking = (
        Post.objects.values("author_id")
        .annotate(likes=Sum("like_count"))
        .filter(likes__gt=0)
        .order_by("-likes", "author_id")
        .values_list("author_id", "likes")
    )
    if limit is not None:
        ranking = ranking[:limit]
    return [(user_id, int(likes)) for user_id, likes in ranking]


def leaderboard_top(*, count: int) -> list[LeaderboardEntry]:
    """The first `count` people of the leaderboard."""
    if count <= 0:
        return []
    try:
        stored = get_redis("cache").zrange(keys.leaderboard(), 0, count - 1, withscores=True)
        # Redis has no empty zsets: nothing back means the zset is missing (or nobody
        # has a like yet, in which case the rebuild is one cheap query).
        rows = _from_zset(stored) if stored else _rebuild()[:count]
    except _REDIS_ERRORS as exc:
        if not is_unavailable(exc):
            raise
        logger.warning("Leaderboard read from the database: cache Redis unavailable")
        rows = _likes_by_author(limit=count)
    return _entries(rows, first_rank=1)


def leaderboard_entry(*, user_id: int) -> LeaderboardEntry | None:
    """`user_id`'s own rank and likes; None until one of their posts has a like."""
    window = leaderboard_around(user_id=user_id, radius=0)
    return window[0] if window else None


def leaderboard_around(*, user_id: int, radius: int = 2) -> list[LeaderboardEntry]:
    """The "around me" window: `user_id`'s entry and `radius` entries either side of it.

    Fewer at either end of the board; empty when the person has no likes yet.
    """
    radius = max(radius, 0)
    try:
        found = _window_script()(keys=[keys.leaderboard()], args=[_member(user_id), radius], client=get_redis("cache"))
        if found is None:
            return _window(_rebuild(), user_id=user_id, radius=radius)
        if not found:
            return []
        first, stored = found
        return _entries(_from_zset(_pairs(stored)), first_rank=first + 1)
    except _REDIS_ERRORS as exc:
        if not is_unavailable(exc):
            raise
        logger.warning("Leaderboard read from the database: cache Redis unavailable")
        return _window(_likes_by_author(), user_id=user_id, radius=radius)


def _window(rows: list[tuple[int, int]], *, user_id: int, radius: int) -> list[LeaderboardEntry]:
    """The around-me window computed from a full ranking (database or rebuild)."""
    index = next((i for i, (uid, _) in enumerate(rows) if uid == user_id), None)
    if index is None:
        return []
    first = max(index - radius, 0)
    return _entries(rows[first : index + radius + 1], first_rank=first + 1)


def _pairs(flat: list[bytes]) -> list[tuple[bytes, float]]:
    # A script's WITHSCORES reply is flat (member, score, member, score...).
    return [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]


def _from_zset(stored: list[tuple[bytes, float]]) -> list[tuple[int, int]]:
    return [(int(member), -int(score)) for member, score in stored]


def _entries(rows: list[tuple[int, int]], *, first_rank: int) -> list[LeaderboardEntry]:
    if not rows:
        return []
    # Names from the profile cache (L1, one MGET): a deactivated or deleted account
    # shows no name.
    profiles = user_profiles(user_ids=[uid for uid, _ in rows])
    return [
        {"rank": first_rank + i, "userId": uid, "username": profile["username"] if profile else None, "likes": likes}
        for i, ((uid, likes), profile) in enumerate(zip(rows, profiles, strict=True))
    ]


def leaderboard_drop() -> None:
    """Forget the sorted set so the next read rebuilds it (a member left, say). Fails open."""
    try:
        get_redis("cache").delete(keys.leaderboard())
    except _REDIS_ERRORS as exc:
        logger.warning("Could not drop the leaderboard: %s", exc)
