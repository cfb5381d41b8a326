"""Writes of the posts app: posts and likes, and their effects on caches and streams.

Each write commits in the database first; its Redis side effects (write-through,
invalidation, the leaderboard, feeds' fan-out and notifications) run after commit.
Cache-role effects fail open: what could not be written is invalidated instead.
"""

from __future__ import annotations

import json
import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from redis.cluster import RedisCluster

from accounts.models import User
from core import metrics
from core.cacheaside import invalidate_now
from core.commit import after_commit
from core.redis import RedisPipeline, get_redis, is_unavailable
from feeds.services import like_effects_apply, timeline_fanout_schedule
from posts import keys
from posts.leaderboard import leaderboard_like_changed, leaderboard_like_queue
from posts.models import Like, Post
from posts.selectors import POST, USER_POSTS, post_summary

logger = logging.getLogger(__name__)


class AlreadyLiked(Exception):
    """post_like: the person already likes this post (the unique Like row exists).

    Nothing was written; the API answers 409.
    """


class NotLiked(Exception):
    """post_unlike: the person does not like this post (no Like row).

    Nothing was written; the API answers 404.
    """


def post_create(*, author: User, title: str, content: str) -> Post:
    """Publish a post: the one way a post comes to exist (the API, the site, the admin, seed_demo).

    ValidationError for what the model refuses; nothing is written then. After commit,
    in this order: the write-through of the author's list and stats, which also drops a
    404 cached for the new id (one round trip on the cache role), then the fan-out to
    followers' timelines and the author's activity (feeds.services: one pipeline, or
    for a popular author a job recorded in this same transaction).
    """
    post = Post(author=author, title=title.strip(), content=content.strip())
    post.full_clean(exclude=["view_count", "like_count"])
    post.written_through = True  # the caches are written below: posts.signals leaves them be
    with transaction.atomic():
        post.save()
        after_commit(write_through_new_post, post)
        timeline_fanout_schedule(post=post)
    return post


def post_update(*, post: Post, editor: User, title: str | None = None, content: str | None = None) -> Post:
    """Edit a post's title or content; PermissionDenied unless `editor` wrote it.

    ValidationError for what the model refuses. An edit that changes nothing writes
    nothing, so no cached copy goes; otherwise posts.signals drops the post's entry
    (and, for a new title, its author's list) after commit.
    """
    _ensure_author(post, editor)
    changes = {
        field: value.strip()
        for field, value in (("title", title), ("content", content))
        if value is not None and value.strip() != getattr(post, field)
    }
    if not changes:
        return post
    for field, value in changes.items():
        setattr(post, field, value)
    post.full_clean(exclude=["view_count", "like_count"])
    post.save(update_fields=[*changes, "updated_at"])  # posts.signals drops the caches after commit
    return post


def post_delete(*, post: Post, editor: User) -> None:
    """Delete a post and its likes; PermissionDenied unless `editor` wrote it.

    After commit: posts.signals drops its caches, and the leaderboard loses its likes
    (leaderboard_like_changed, which fails open).
    """
    _ensure_author(post, editor)
    post_id, author_id, likes = post.pk, post.author_id, post.like_count
    with transaction.atomic():
        post.delete()  # posts.signals drops the caches after commit
        if likes:
            after_commit(leaderboard_like_changed, author_id=author_id, delta=-likes)
    logger.info("Post %s deleted by %s", post_id, editor.pk)


def _ensure_author(post: Post, user: User) -> None:
    if post.author_id != user.pk:
        raise PermissionDenied("Only the author can change this post.")


def post_like(*, post: Post, user: User) -> None:
    """Like a post once. AlreadyLiked if done before; ValidationError for one's own post.

    The Like row and the post's like_count move in one transaction. After commit, one
    cache-role round trip (post entry, author's stats, leaderboard; fails open) and the
    like's activity entry and notification (feeds.services).
    """
    if post.author_id == user.pk:
        raise ValidationError("You cannot like your own post.")
    with transaction.atomic():
        try:
            with transaction.atomic():
                Like.objects.create(user=user, post=post)
        except IntegrityError:
            raise AlreadyLiked from None
        Post.objects.filter(pk=post.pk).update(like_count=F("like_count") + 1)
        after_commit(_after_like, post.pk, post.author_id, +1, liker=user, title=post.title)


def post_unlike(*, post: Post, user: User) -> None:
    """Take a like back; NotLiked if there was none.

    The Like row and like_count move in one transaction; after commit the same cache
    updates as post_like, with -1 (no activity entry or notification).
    """
    with transaction.atomic():
        deleted, _ = Like.objects.filter(user=user, post=post).delete()
        if not deleted:
            raise NotLiked
        Post.objects.filter(pk=post.pk).update(like_count=F("like_count") - 1)
        after_commit(_after_like, post.pk, post.author_id, -1)


# --- After commit ------------------------------------------------------------------------


def write_through_new_post(post: Post) -> None:
    """After a post commits, one MULTI/EXEC on the cache role: the write-through of its
    author's list and stats, and the invalidation of the post's own (maybe 404) entry
    (on a Redis Cluster, the MULTI and then the invalidation: they are in two slots).

    LPUSHX, not LPUSH: a missing list stays missing rather than hold only this post.
    HINCRBY on a missing hash makes one without `built`, which readers rebuild. Fails
    open: if Redis does not answer, the author's list and stats are invalidated instead.
    """
    list_key, stats_key = keys.user_posts_recent(post.author_id), keys.user_posts_stats(post.author_id)
    client = get_redis("cache")
    pipe = client.pipeline(transaction=True)
    pipe.lpushx(list_key, json.dumps(post_summary(post)))
    pipe.ltrim(list_key, 0, keys.RECENT_POSTS_LIMIT - 1)
    pipe.hincrby(stats_key, "postCount", 1)
    pipe.expire(stats_key, keys.WRITE_THROUGH_TTL)
    pipe.expire(list_key, keys.WRITE_THROUGH_TTL)
    if isinstance(client, RedisCluster):
        # The post's own entry is in another slot than its author's list and stats, and
        # a cluster's MULTI holds one slot: the invalidation is a round trip of its own.
        written = _executed(pipe)
        written = invalidate_now(POST.name, post.pk) and written
    else:
        written = invalidate_now(POST.name, post.pk, pipe=pipe)
    if not written:
        # Cache role: fail open. The write committed; the outbox drops the post's entry
        # once Redis is back, and the author's list and stats go the same way.
        metrics.incr("cache.error", family=USER_POSTS.name)
        logger.warning("Write-through for post %s failed; author's list will be rebuilt", post.pk)
        _user_posts_invalidate(post.author_id)


def _executed(pipe: RedisPipeline) -> bool:
    """Run a cache-role pipeline: False when Redis did not answer."""
    try:
        pipe.execute()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return False
    return True


def _user_posts_invalidate(author_id: int) -> None:
    """Make the next read rebuild an author's list and stats (family USER_POSTS).

    Outbox-backed: an invalidation Redis did not take is replayed once it answers.
    """
    invalidate_now(USER_POSTS.name, author_id)


def _after_like(post_id: int, author_id: int, delta: int, *, liker: User | None = None, title: str = "") -> None:
    """After a like or an unlike commits: one cache-role round trip, then a like's streams.

    The round trip drops the post's entry (its likeCount changed) and moves the
    author's likesReceived and the leaderboard; if Redis does not answer, the author's
    stats are invalidated instead. A like (not an unlike) then adds the liker's activity
    entry and the author's notification (feeds.services, the state role).
    """
    pipe = get_redis("cache").pipeline(transaction=False)
    pipe.hincrby(keys.user_posts_stats(author_id), "likesReceived", delta)
    pipe.expire(keys.user_posts_stats(author_id), keys.WRITE_THROUGH_TTL)
    leaderboard_like_queue(pipe, author_id=author_id, delta=delta)
    if not invalidate_now(POST.name, post_id, pipe=pipe):
        # Cache role: fail open. The post's entry is in the outbox; the stats missed this
        # like, so they go too; the leaderboard drifts until it expires or is rebuilt.
        _user_posts_invalidate(author_id)
    if liker is not None:  # a like, not an unlike: the liker's activity, the author's notification
        like_effects_apply(liker=liker, post_id=post_id, post_title=title, author_id=author_id)
