"""Reads of the posts app: posts and pages, an author's recent posts and stats, and the
feeds' streams hydrated with posts.

Posts and pages are cache-aside (core.cacheaside: L1, Redis, database); an author's list
and stats are written through by posts.services and rebuilt here (core.rebuild). Every
cache-role read fails open to the database.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import cast

from django.db.models import Q, QuerySet, Sum

from accounts.selectors import user_profile
from core import cacheaside, metrics
from core.rebuild import rebuild
from core.redis import RedisClient, RedisPipeline, fail_open, get_redis
from feeds import selectors as feed_selectors
from feeds.stream_ids import post_stream_id, posts_before, stream_id_or_raise
from posts import keys
from posts.models import Like, Page, Post

logger = logging.getLogger(__name__)

POST = cacheaside.register(
    cacheaside.Family("post", keys.post_detail, ttl=keys.POST_TTL, missing_ttl=keys.POST_MISSING_TTL, l1_ttl=2.0)
)
PAGE = cacheaside.register(
    cacheaside.Family("page", keys.page_detail, ttl=keys.POST_TTL, missing_ttl=keys.POST_MISSING_TTL, l1_ttl=5.0)
)
# An author's recent posts and stats (user_posts_and_stats), registered for invalidation
# only: deleting the stats hash (it loses `built`) makes the next read rebuild both.
USER_POSTS = cacheaside.register(cacheaside.Family("user_posts", keys.user_posts_stats, ttl=keys.WRITE_THROUGH_TTL))


def post_to_dict(post: Post) -> dict:
    """The cached and served shape of a post (apis.PostSerializer documents it).

    A plain dict, built without a serializer: this runs on every cache miss of a post.
    Needs `post.author` loaded (select_related) for the username.
    """
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
    """An entry of an author's recent-posts list: {"id", "title", "createdAt"}.

    What keys.user_posts_recent holds as JSON, written through by posts.services and
    rebuilt here.
    """
    return {"id": post.pk, "title": post.title, "createdAt": post.created_at.isoformat()}


def post_detail(*, post_id: int) -> dict | None:
    """One post, cache-aside (L1, Redis, database); None if it does not exist.

    viewCount is the flushed count; add the pending views (posts.counters) to show it.
    Key keys.post_detail (cache role, POST_TTL); fails open to the database.
    """
    return cacheaside.get_or_load(POST, post_id, lambda: _load_post(post_id))


_POST_FIELDS = (
    *("id", "title", "content", "created_at", "updated_at", "like_count", "view_count", "author_id"),
    "author__username",  # the author row is needed for its name only, never its password hash
)


def post_details(*, post_ids: list[int]) -> list[dict | None]:
    """Posts as post_detail gives them, in the order of `post_ids`; None for one that does not exist.

    For lists (timelines, activity): the L1, one MGET, and one query for the misses.
    Fails open to the database, as post_detail.
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
    """One standing page with its flushed view count; None if it does not exist.

    Cache-aside (L1, Redis, database), key keys.page_detail (cache role, POST_TTL);
    fails open to the database. Add the pending views (posts.counters) to show them.
    """
    return cacheaside.get_or_load(PAGE, page_id, lambda: _load_page(page_id))


def _load_page(page_id: int) -> dict | None:
    page = Page.objects.filter(pk=page_id).first()
    if page is None:
        return None
    return {"id": page.pk, "slug": page.slug, "title": page.title, "body": page.body, "viewCount": page.view_count}


def post_liked_by(*, post_id: int, user_id: int) -> bool:
    """Whether `user_id` likes the post: one indexed query (the unique Like row).

    Not cached: only a logged-in reader's own post page asks.
    """
    return Like.objects.filter(post_id=post_id, user_id=user_id).exists()


def post_ids_liked_by(*, user_id: int, post_ids: Iterable[int]) -> set[int]:
    """Which of `post_ids` `user_id` likes: one indexed query, for a page of post cards."""
    return set(Like.objects.filter(user_id=user_id, post_id__in=list(post_ids)).values_list("post_id", flat=True))


def recent_posts_page(*, count: int = feed_selectors.FEED_COUNT_DEFAULT, before: str | None = None) -> dict:
    """{"items": [{"id", "post"}], "next"}: everyone's posts, newest first, as a feed page.

    The ids from one indexed query (post_list_by_authors), the posts from their cache
    (post_details); `next` (a stream id, as the home timeline's) is the next page's `before`.
    """
    rows = post_list_by_authors(author_ids=None, limit=count, before=posts_before(before) if before else None)
    cursors = sorted(((post_stream_id(created, pk), pk) for pk, _, created in rows), key=_cursor_order, reverse=True)
    posts = post_details(post_ids=[pk for _, pk in cursors])
    items = [{"id": cursor, "post": post} for (cursor, _), post in zip(cursors, posts, strict=True) if post]
    return {"items": items, "next": cursors[-1][0] if len(rows) == count else None}


def _cursor_order(row: tuple[str, int]) -> tuple[int, int]:
    return stream_id_or_raise(row[0])


def user_posts_page(*, user_id: int, count: int = keys.RECENT_POSTS_LIMIT, before: str | None = None) -> dict:
    """{"posts": [post_summary], "next"}: a page of an author's posts, newest first.

    The first page comes from the written-through recent list (user_posts_and_stats: no
    query while it is in Redis); older pages, and pages longer than that list, from one
    indexed query. `next` is the `before` of the next page.
    """
    if before is None and count <= keys.RECENT_POSTS_LIMIT:
        return _first_posts_page(*user_posts_and_stats(user_id=user_id), count=count)
    return _older_posts_page(user_id, count=count, before=before)


def user_profile_posts(*, user_id: int, count: int, before: str | None = None) -> tuple[dict, dict]:
    """A profile page's user_posts_page and the author's stats, in one round trip for the first page."""
    recent, stats = user_posts_and_stats(user_id=user_id)
    if before is None and count <= keys.RECENT_POSTS_LIMIT:
        return _first_posts_page(recent, stats, count=count), stats
    return _older_posts_page(user_id, count=count, before=before), stats


def _first_posts_page(recent: list[dict], stats: dict, *, count: int) -> dict:
    page = recent[:count]
    return {"posts": page, "next": _summary_cursor(page[-1]) if page and stats["postCount"] > len(page) else None}


def _older_posts_page(user_id: int, *, count: int, before: str | None) -> dict:
    rows = Post.objects.filter(author_id=user_id)
    if before:
        rows = _older_than(rows, posts_before(before))
    page = [
        post_summary(post) for post in rows.order_by("-created_at", "-pk").only("pk", "title", "created_at")[:count]
    ]
    return {"posts": page, "next": _summary_cursor(page[-1]) if len(page) == count else None}


def _summary_cursor(summary: dict) -> str:
    return post_stream_id(datetime.fromisoformat(summary["createdAt"]), summary["id"])


def post_with_author(*, post_id: int) -> Post | None:
    """The post with its author loaded (what a fan-out job needs), None if it is gone.

    One query, never cached: a job must see the row as it is now.
    """
    return Post.objects.select_related("author").filter(pk=post_id).first()


_MS = timedelta(milliseconds=1)


def _older_than(posts: QuerySet[Post], before: tuple[datetime, int]) -> QuerySet[Post]:
    # Posts before `before` in list order: created before that millisecond, or within it
    # with a smaller id (what a stream id cursor means; feeds.stream_ids.posts_before).
    start, seq = before
    return posts.filter(Q(created_at__lt=start) | Q(created_at__lt=start + _MS, pk__lt=seq))


def post_list_by_authors(
    *, author_ids: Iterable[int] | None, limit: int, before: tuple[datetime, int] | None = None
) -> list[tuple[int, int, datetime]]:
    """(id, author id, created_at) of the newest `limit` posts by `author_ids`, newest first.

    What rebuilds a home timeline, and pages everyone's posts (`author_ids` None).
    `author_ids` is a list, or a query of ids that becomes a subquery. With `before`
    (the start of a millisecond, a post id): only posts created before that
    millisecond, or within it with a smaller id (feeds.selectors' page order). One query.
    """
    posts = Post.objects.all() if author_ids is None else Post.objects.filter(author_id__in=author_ids)
    if before:
        posts = _older_than(posts, before)
    return list(posts.order_by("-created_at", "-pk").values_list("pk", "author_id", "created_at")[:limit])


# --- Feeds' streams, with their posts --------------------------------------------------
#
# Feeds keeps the streams (ids only) and reads no posts: these hand it posts' readers.


def home_timeline_page(
    *, user_id: int, count: int = feed_selectors.FEED_COUNT_DEFAULT, before: str | None = None
) -> dict:
    """{"items": [{"id", "post"}], "next"}: feeds.selectors.timeline_page with its posts.

    Posts come from post_details; a missing timeline is rebuilt from
    post_list_by_authors. Failure policy: feeds.selectors.timeline_page's.
    """
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
    """{"items", "next"}: feeds.selectors.activity_page, leaving out posts that are gone.

    The stream is state-role data, the only copy of what it records: a Redis that
    does not answer is an error (feeds.selectors.activity_page).
    """
    return feed_selectors.activity_page(user_id=user_id, count=count, before=before, post_details=post_details)


# --- Write-through: an author's recent posts and stats ---------------------------------
#
# Writers (posts.services, after commit) push onto these keys in one MULTI/EXEC;
# readers trust them only when they agree with each other, and rebuild both from the
# database otherwise (expired, evicted, Redis restarted, or never built).


def user_recent_posts(*, user_id: int) -> list[dict]:
    """The author's 50 most recent posts, newest first (post_summary's shape).

    Write-through on the cache role (user_posts_and_stats); fails open to the database.
    """
    return _write_through(user_id)[0]


def user_stats(*, user_id: int) -> dict:
    """{"postCount", "likesReceived"} of an author.

    Write-through on the cache role (user_posts_and_stats); fails open to the database.
    """
    return _write_through(user_id)[1]


def user_posts_and_stats(*, user_id: int) -> tuple[list[dict], dict]:
    """An author's recent posts and stats at once, in one round trip (a profile page shows both).

    Read from keys.user_posts_recent and keys.user_posts_stats (cache role,
    WRITE_THROUGH_TTL), trusted only when the list's length agrees with the stats' count
    and the stats carry `built`; otherwise rebuilt from the database. Fails open: while
    the cache role does not answer, both come from the database.
    """
    return _write_through(user_id)


def _write_through(user_id: int) -> tuple[list[dict], dict]:
    client = get_redis("cache")
    list_key, stats_key = keys.user_posts_recent(user_id), keys.user_posts_stats(user_id)
    # Cache role: these are copies of rows, so a Redis that does not answer costs
    # queries, never the page.
    with fail_open(
        "cache.error", "Cache role unavailable reading user %s posts", user_id, log=logger, family=USER_POSTS.name
    ):
        pipe = client.pipeline(transaction=False)
        pipe.lrange(list_key, 0, keys.RECENT_POSTS_LIMIT - 1)
        pipe.hgetall(stats_key)
        items, stats = pipe.execute()
        if b"built" in stats and len(items) == min(int(stats[b"postCount"]), keys.RECENT_POSTS_LIMIT):
            metrics.incr("cache.hit", family=USER_POSTS.name, tier="redis")
            return [json.loads(item) for item in items], _stats_dict(stats)
        metrics.incr("cache.miss", family=USER_POSTS.name)
        return _rebuild(client, user_id)
    return _from_db(user_id)


def _stats_dict(stats: dict[bytes, bytes]) -> dict:
    return {"postCount": int(stats.get(b"postCount", 0)), "likesReceived": int(stats.get(b"likesReceived", 0))}


def _from_db(user_id: int) -> tuple[list[dict], dict]:
    posts = Post.objects.filter(author_id=user_id).order_by("-created_at", "-id")
    recent = [post_summary(post) for post in posts.only("id", "title", "created_at")[: keys.RECENT_POSTS_LIMIT]]
    totals = posts.aggregate(likes=Sum("like_count"))
    stats = {"postCount": posts.count(), "likesReceived": totals["likes"] or 0}
    return recent, stats


USER_POSTS_REBUILD_ATTEMPTS = 3


def _rebuild(client: RedisClient, user_id: int) -> tuple[list[dict], dict]:
    """Rebuild an author's list and stats from the database (core.rebuild), and return them.

    WATCHes the stats hash, which every write-through HINCRBYs: a post created or liked
    during the read aborts the store, and after USER_POSTS_REBUILD_ATTEMPTS lost races
    the last read is served uncached. Redis errors propagate (the caller fails open).
    """
    list_key, stats_key = keys.user_posts_recent(user_id), keys.user_posts_stats(user_id)

    def store(pipe: RedisPipeline, built: tuple[list[dict], dict]) -> None:
        recent, stats = built
        pipe.delete(list_key, stats_key)
        if recent:
            pipe.rpush(list_key, *[json.dumps(item) for item in recent])
            pipe.expire(list_key, keys.WRITE_THROUGH_TTL)
        pipe.hset(stats_key, mapping={**stats, "built": 1})
        pipe.expire(stats_key, keys.WRITE_THROUGH_TTL)

    rebuilt = rebuild(
        client,
        family=USER_POSTS.name,
        load=lambda: _from_db(user_id),
        store=store,
        watch=[stats_key],
        attempts=USER_POSTS_REBUILD_ATTEMPTS,
    )
    # Without a lease every attempt loads: the value is what the last one read.
    return cast(tuple[list[dict], dict], rebuilt.value)


def user_exists(*, user_id: int) -> bool:
    """Whether `user_id` is an active account, from the profile cache.

    accounts.selectors.user_profile: cache-aside, fails open to the database.
    """
    return user_profile(user_id=user_id) is not None
