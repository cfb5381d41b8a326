"""Reads of the posts app: cache-aside for single objects, write-through lists and stats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Q, QuerySet, Sum
from redis.exceptions import WatchError

from accounts.selectors import user_profile
from core import cacheaside, metrics
from core.redis import get_redis, is_unavailable
from feeds import selectors as feed_selectors
from posts import keys
from posts.models import Like, Page, Post

logger = logging.getLogger(__name__)

POST = cacheaside.register(
    cacheaside.Family("post", keys.post_detail, ttl=keys.POST_TTL, missing_ttl=keys.POST_MISSING_TTL, l1_ttl=2.0)
)
PAGE = cacheaside.register(
    cacheaside.Family("page", keys.page_detail, ttl=keys.POST_TTL, missing_ttl=keys.POST_MISSING_TTL, l1_ttl=5.0)
)
# Used only for invalidation: deleting the stats hash (it loses `built`) makes the next
# read rebuild both the recent list and the stats.
AUTHOR_LISTS = cacheaside.register(cacheaside.Family("user_posts", keys.user_stats, ttl=keys.WRITE_THROUGH_TTL))


def post_to_dict(post: Post) -> dict:
    """The cached and served shape of a post: a plain dict (no serializer on the hot path)."""
    return {
        "id": post.pk,
        "title": post.title,
        "content": post.content,
        "author": {"id": post.author_id, "username": post.author.username},
        "createdAt": post.created_at.isoformat(),
        "updatedAt": post.updated_at.isoformat(),
        "likeCount": post.like_count,
        "viewCount": post.view_count,
    }


def post_summary(post: Post) -> dict:
    """An entry of an author's recent-posts list."""
    return {"id": post.pk, "title": post.title, "createdAt": post.created_at.isoformat()}


def post_detail(*, post_id: int) -> dict | None:
    """One post, cache-aside (L1, Redis, database); None if it does not exist.

    viewCount is the flushed count; add the pending views (posts.counters) to show it.
    """
    return cacheaside.get_or_load(POST, post_id, lambda: _load_post(post_id))


_POST_FIELDS = (
    *("id", "title", "content", "created_at", "updated_at", "like_count", "view_count", "author_id"),
    "author__username",  # the author row is needed for its name only, never its password hash
)


def post_details(*, post_ids: list[int]) -> list[dict | None]:
    """Posts as post_detail gives them, in the order of `post_ids`; None for one that does not exist.

    For lists (timelines, activity): the L1, one MGET, and one query for the misses.
    """
    return cacheaside.get_many(POST, post_ids, _load_posts)


def _load_posts(post_ids: list[int]) -> dict[int, dict]:
    rows = Post.objects.select_related("author").only(*_POST_FIELDS).filter(pk__in=post_ids).order_by()
    return {post.pk: post_to_dict(post) for post in rows}


def _load_post(post_id: int) -> dict | None:
    try:
        post = Post.objects.select_related("author").only(*_POST_FIELDS).get(pk=post_id)
    except Post.DoesNotExist:
        return None
    return post_to_dict(post)


def page_detail(*, page_id: int) -> dict | None:
    return cacheaside.get_or_load(PAGE, page_id, lambda: _load_page(page_id))


def _load_page(page_id: int) -> dict | None:
    page = Page.objects.filter(pk=page_id).first()
    if page is None:
        return None
    return {"id": page.pk, "slug": page.slug, "title": page.title, "body": page.body, "viewCount": page.view_count}


def post_liked_by(*, post_id: int, user_id: int) -> bool:
    return Like.objects.filter(post_id=post_id, user_id=user_id).exists()


def post_list_recent(*, limit: int = 20) -> QuerySet[Post]:
    """The newest posts from everyone, for the home page."""
    return Post.objects.select_related("author").order_by("-created_at", "-id")[:limit]


def post_with_author(*, post_id: int) -> Post | None:
    """The post with its author loaded (what a fan-out job needs), None if it is gone."""
    return Post.objects.select_related("author").filter(pk=post_id).first()


_MS = timedelta(milliseconds=1)


def post_list_by_authors(
    *, author_ids: Iterable[int], limit: int, before: tuple[datetime, int] | None = None
) -> list[tuple[int, int, datetime]]:
    """(id, author id, created_at) of the newest `limit` posts by `author_ids` (a list, or a
    query of ids that becomes a subquery), newest first: what rebuilds a home timeline.

    With `before` (the start of a millisecond, a post id): only posts created before
    that millisecond, or within it with a smaller id (feeds.selectors' page order).
    """
    posts = Post.objects.filter(author_id__in=author_ids)
    if before:
        start, seq = before
        posts = posts.filter(Q(created_at__lt=start) | Q(created_at__lt=start + _MS, pk__lt=seq))
    return list(posts.order_by("-created_at", "-pk").values_list("pk", "author_id", "created_at")[:limit])


# --- Feeds' streams, with their posts --------------------------------------------------
#
# Feeds keeps the streams (ids only) and reads no posts: these hand it posts' readers.


def home_timeline_page(
    *, user_id: int, count: int = feed_selectors.FEED_COUNT_DEFAULT, before: str | None = None
) -> dict:
    """{"items": [{"id", "post"}], "next"}: feeds.selectors.timeline_page with its posts."""
    return feed_selectors.timeline_page(
        user_id=user_id,
        count=count,
        before=before,
        post_details=post_details,
        posts_by_authors=post_list_by_authors,
    )


def user_activity_page(
    *, user_id: int, count: int = feed_selectors.ACTIVITY_COUNT_DEFAULT, before: str | None = None
) -> dict:
    """{"items", "next"}: feeds.selectors.activity_page, leaving out posts that are gone."""
    return feed_selectors.activity_page(user_id=user_id, count=count, before=before, post_details=post_details)


# --- Write-through: an author's recent posts and stats ---------------------------------
#
# Writers (posts.services, after commit) push onto these keys in one MULTI/EXEC;
# readers trust them only when they agree with each other, and rebuild both from the
# database otherwise (expired, evicted, Redis restarted, or never built).


def user_recent_posts(*, user_id: int) -> list[dict]:
    """The author's 50 most recent posts, newest first."""
    return _write_through(user_id)[0]


def user_stats(*, user_id: int) -> dict:
    """{"postCount", "likesReceived"} of an author."""
    return _write_through(user_id)[1]


def user_posts_and_stats(*, user_id: int) -> tuple[list[dict], dict]:
    """Both at once, in one round trip (a profile page shows both)."""
    return _write_through(user_id)


def _write_through(user_id: int) -> tuple[list[dict], dict]:
    client = get_redis("cache")
    list_key, stats_key = keys.user_recent_posts(user_id), keys.user_stats(user_id)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.lrange(list_key, 0, keys.RECENT_POSTS_LIMIT - 1)
        pipe.hgetall(stats_key)
        items, stats = pipe.execute()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # Cache role: fail open to the database.
        metrics.incr("cache.error", family="user_posts")
        logger.warning("Cache role unavailable reading user %s posts: %s", user_id, exc)
        return _from_db(user_id)

    if b"built" in stats and len(items) == min(int(stats[b"postCount"]), keys.RECENT_POSTS_LIMIT):
        metrics.incr("cache.hit", family="user_posts", tier="redis")
        return [json.loads(item) for item in items], _stats_dict(stats)

    metrics.incr("cache.miss", family="user_posts")
    return _rebuild(client, user_id)


def _stats_dict(stats: dict) -> dict:
    return {"postCount": int(stats.get(b"postCount", 0)), "likesReceived": int(stats.get(b"likesReceived", 0))}


def _from_db(user_id: int) -> tuple[list[dict], dict]:
    posts = Post.objects.filter(author_id=user_id).order_by("-created_at", "-id")
    recent = [post_summary(post) for post in posts.only("id", "title", "created_at")[: keys.RECENT_POSTS_LIMIT]]
    totals = posts.aggregate(likes=Sum("like_count"))
    stats = {"postCount": posts.count(), "likesReceived": totals["likes"] or 0}
    return recent, stats


def _rebuild(client, user_id: int) -> tuple[list[dict], dict]:
    """Rebuild list and stats from the database, unless a write lands meanwhile.

    Every write-through HINCRBYs the stats hash, so WATCHing it makes EXEC fail if a
    post was created (or liked) between our database read and our write: we would
    otherwise store a list without that post. Then we retry, and after three lost
    races serve the database result uncached.
    """
    list_key, stats_key = keys.user_recent_posts(user_id), keys.user_stats(user_id)
    for _ in range(3):
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(stats_key)
                recent, stats = _from_db(user_id)
                pipe.multi()
                pipe.delete(list_key, stats_key)
                if recent:
                    pipe.rpush(list_key, *[json.dumps(item) for item in recent])
                    pipe.expire(list_key, keys.WRITE_THROUGH_TTL)
                pipe.hset(stats_key, mapping={**stats, "built": 1})
                pipe.expire(stats_key, keys.WRITE_THROUGH_TTL)
                pipe.execute()
                return recent, stats
        except WatchError:
            metrics.incr("cache.rebuild_raced", family="user_posts")
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            metrics.incr("cache.error", family="user_posts")
            return _from_db(user_id)
    return _from_db(user_id)


def user_exists(*, user_id: int) -> bool:
    return user_profile(user_id=user_id) is not None
