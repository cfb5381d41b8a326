"""The leaderboard: people ranked by the likes their posts received.

A sorted set on the cache role (keys.leaderboard, LEADERBOARD_TTL), rebuilt from the
database whenever it is missing and kept current by `leaderboard_like_queue` after
each like. Most likes first, equal likes by lower user id: the score is minus the
likes, the member the id zero-padded to 12 digits. Failure policy: every function
fails open (writes are dropped and the zset drifts until rebuilt; reads use the database).
"""

from __future__ import annotations

import functools
import logging
from typing import TypedDict, cast

from django.db.models import Sum
from redis.commands.core import Script
from redis.typing import EncodableT

from accounts.selectors import user_profiles
from core.rebuild import rebuild
from core.redis import RedisPipeline, fail_open, get_redis
from core.scripts import script_queue
from posts import keys
from posts.keys import LEADERBOARD_TTL
from posts.models import Post

logger = logging.getLogger(__name__)

REBUILD_ATTEMPTS = 3
# The `family` label of the leaderboard's cache metrics (cache.error, cache.rebuilt...).
# Not a core.cacheaside family: nothing invalidates the zset by id.
LEADERBOARD_FAMILY = "leaderboard"

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
    """One line of the leaderboard, as the API and the pages show it.

    The API's field names (camelCase); ranks start at 1.
    """

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
    """Apply a like (+1) or unlike (-1) on one of `author_id`'s posts; call after commit.

    One script call on the cache role: bumps keys.leaderboard_version and, when the
    zset exists, moves the author's score. Fails open (logged, counted as cache.error).
    """
    # The like is committed; only the ranking misses it, until the zset expires
    # (LEADERBOARD_TTL) or is rebuilt.
    with fail_open(
        "cache.error",
        "Leaderboard update for user %s skipped: cache Redis unavailable",
        author_id,
        log=logger,
        family=LEADERBOARD_FAMILY,
    ):
        _like_changed_script()(
            keys=[keys.leaderboard(), keys.leaderboard_version()],
            args=[_member(author_id), delta, LEADERBOARD_TTL],
            client=get_redis("cache"),
        )


def leaderboard_like_queue(pipe: RedisPipeline, *, author_id: int, delta: int) -> None:
    """What leaderboard_like_changed does, queued in a caller's cache-role pipeline.

    A like's other cache updates go in the same round trip; the caller owns the
    failure policy.
    """
    args: list[EncodableT] = [_member(author_id), delta, LEADERBOARD_TTL]
    script_queue(pipe, _like_changed_script(), [([keys.leaderboard(), keys.leaderboard_version()], args)])


def leaderboard_rebuild() -> None:
    """Rebuild the zset from the database now (at most REBUILD_ATTEMPTS tries).

    Fails open: while the cache role does not answer, readers compute the ranking from
    the database and the next one rebuilds.
    """
    # Nothing waits on the zset: readers answer from the database without it.
    with fail_open(
        "cache.error", "Leaderboard rebuild skipped: cache Redis unavailable", log=logger, family=LEADERBOARD_FAMILY
    ):
        _rebuild()


def _rebuild() -> list[tuple[int, int]]:
    """Store the database's ranking in the zset (core.rebuild); returns that ranking, all of it.

    WATCHes keys.leaderboard_version, which every like bumps: a like committed during
    the read aborts the store (then it reads again), one committed after it applies to
    the stored zset. Redis errors propagate.
    """
    board = keys.leaderboard()

    def store(pipe: RedisPipeline, rows: list[tuple[int, int]]) -> None:
        pipe.delete(board)
        if rows:
            pipe.zadd(board, {_member(user_id): -likes for user_id, likes in rows})
            pipe.expire(board, LEADERBOARD_TTL)

    rebuilt = rebuild(
        get_redis("cache"),
        family=LEADERBOARD_FAMILY,
        load=_likes_by_author,
        store=store,
        watch=[keys.leaderboard_version()],
        attempts=REBUILD_ATTEMPTS,
    )
    if not rebuilt.stored:
        # Likes kept landing: leave the zset missing; the caller answers from the last
        # read, which was right as of that read, and the next reader tries again.
        logger.info("Leaderboard rebuild gave up after %s attempts (likes kept arriving)", REBUILD_ATTEMPTS)
    return rebuilt.value or []


def _likes_by_author(*, limit: int | None = None) -> list[tuple[int, int]]:
    """(user id, likes received) of everyone with likes, in leaderboard order."""
    ranking = (
        Post.objects.values("author_id")
        .annotate(likes_received=Sum("like_count"))  # not `likes`: Post's relation to its Like rows
        .filter(likes_received__gt=0)
        .order_by("-likes_received", "author_id")
        .values_list("author_id", "likes_received")
    )
    if limit is not None:
        ranking = ranking[:limit]
    return [(user_id, int(likes)) for user_id, likes in ranking]


def leaderboard_top(*, count: int, start: int = 0) -> list[LeaderboardEntry]:
    """`count` people of the leaderboard from rank `start` + 1, most likes first.

    One ZRANGE; a missing zset is rebuilt from the database on the way. Fails open:
    while the cache role does not answer, the ranking comes from the database.
    """
    if count <= 0 or start < 0:
        return []
    # Cache role: the zset is a copy of what the database sums.
    with fail_open(
        "cache.error",
        "Leaderboard read from the database: cache Redis unavailable",
        log=logger,
        family=LEADERBOARD_FAMILY,
    ) as outcome:
        # withscores=True: (member, score) pairs. EXISTS in the same round trip tells a
        # page past the end from a missing zset.
        pipe = get_redis("cache").pipeline(transaction=False)
        pipe.zrange(keys.leaderboard(), start, start + count - 1, withscores=True)
        pipe.exists(keys.leaderboard())
        stored, exists = cast(tuple[list[tuple[bytes, float]], int], pipe.execute())
        # Redis has no empty zsets: a missing one is rebuilt (or nobody has a like yet,
        # in which case the rebuild is one cheap query).
        rows = _from_zset(stored) if exists else _rebuild()[start : start + count]
    if outcome.failed:
        rows = _likes_by_author(limit=start + count)[start:]
    return _entries(rows, first_rank=start + 1)


def leaderboard_entry(*, user_id: int) -> LeaderboardEntry | None:
    """`user_id`'s own rank and likes; None until one of their posts has a like.

    leaderboard_around with radius 0: one script call, failing open to the database.
    """
    window = leaderboard_around(user_id=user_id, radius=0)
    return window[0] if window else None


def leaderboard_around(*, user_id: int, radius: int = 2) -> list[LeaderboardEntry]:
    """The "around me" window: `user_id`'s entry and `radius` entries either side of it.

    Fewer at either end of the board; empty when the person has no likes yet. One
    script call (rank and range together); a missing zset is rebuilt. Fails open to
    the database, as leaderboard_top.
    """
    radius = max(radius, 0)
    # Cache role: the zset is a copy of what the database sums.
    with fail_open(
        "cache.error",
        "Leaderboard read from the database: cache Redis unavailable",
        log=logger,
        family=LEADERBOARD_FAMILY,
    ):
        found = _window_script()(keys=[keys.leaderboard()], args=[_member(user_id), radius], client=get_redis("cache"))
        if found is None:
            return _window(_rebuild(), user_id=user_id, radius=radius)
        if not found:
            return []
        first, stored = found
        return _entries(_from_zset(_pairs(stored)), first_rank=first + 1)
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
    """Forget the sorted set so the next read rebuilds it (a member left, say).

    Fails open: if the cache role does not answer, the zset keeps the member until it
    expires (LEADERBOARD_TTL); readers show a deleted account without a name.
    """
    # A stale entry for a gone account is shown nameless, never an error.
    with fail_open("cache.error", "Could not drop the leaderboard", log=logger, family=LEADERBOARD_FAMILY):
        get_redis("cache").delete(keys.leaderboard())
