"""Writes of the posts app. Redis side effects run after commit, never inside it."""

from __future__ import annotations

import json
import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from accounts.models import User
from core import metrics
from core.cacheaside import invalidate_now
from core.commit import after_commit
from core.redis import get_redis
from feeds.services import like_published, timeline_fanout_schedule
from posts import keys
from posts.leaderboard import leaderboard_like_changed, leaderboard_like_queue
from posts.models import Like, Post
from posts.selectors import POST, USER_POSTS, post_summary

logger = logging.getLogger(__name__)


class AlreadyLiked(Exception):
    pass


class NotLiked(Exception):
    pass


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
    """Edit a post; an edit that changes nothing writes nothing, so no cached copy goes."""
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
    """Like a post once. AlreadyLiked if done before; ValidationError for one's own post."""
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
    with transaction.atomic():
        deleted, _ = Like.objects.filter(user=user, post=post).delete()
        if not deleted:
            raise NotLiked
        Post.objects.filter(pk=post.pk).update(like_count=F("like_count") - 1)
        after_commit(_after_like, post.pk, post.author_id, -1)


# --- After commit ------------------------------------------------------------------------


def write_through_new_post(post: Post) -> None:
    """After a post commits, one MULTI/EXEC on the cache role: the article's write-through of
    its author's list and stats, which move together, and the invalidation of the post's
    own entry (a 404 may have been cached before it existed).

    LPUSHX, not LPUSH: on a missing list (expired, evicted) LPUSH would create a list
    holding only this post, which readers would trust. HINCRBY on a missing hash
    creates one without the `built` marker, which readers rebuild instead of trusting.
    """
    list_key, stats_key = keys.user_posts_recent(post.author_id), keys.user_posts_stats(post.author_id)
    pipe = get_redis("cache").pipeline(transaction=True)
    pipe.lpushx(list_key, json.dumps(post_summary(post)))
    pipe.ltrim(list_key, 0, keys.RECENT_POSTS_LIMIT - 1)
    pipe.hincrby(stats_key, "postCount", 1)
    pipe.expire(stats_key, keys.WRITE_THROUGH_TTL)
    pipe.expire(list_key, keys.WRITE_THROUGH_TTL)
    if not invalidate_now(POST.name, post.pk, pipe=pipe):
        # Cache role: fail open. The write committed; the outbox drops the post's entry
        # once Redis is back, and the author's list and stats go the same way.
        metrics.incr("cache.error", family=USER_POSTS.name)
        logger.warning("Write-through for post %s failed; author's list will be rebuilt", post.pk)
        _user_posts_invalidate(post.author_id)


def _user_posts_invalidate(author_id: int) -> None:
    """Make the next read rebuild an author's list and stats (outbox-backed if Redis is away)."""
    invalidate_now(USER_POSTS.name, author_id)


def _after_like(post_id: int, author_id: int, delta: int, *, liker: User | None = None, title: str = "") -> None:
    """After a like or an unlike commits: one cache-role round trip (the post's entry, whose
    likeCount changed; the author's likesReceived; the leaderboard), then one state-role
    round trip for a like's activity entry and notification."""
    pipe = get_redis("cache").pipeline(transaction=False)
    pipe.hincrby(keys.user_posts_stats(author_id), "likesReceived", delta)
    pipe.expire(keys.user_posts_stats(author_id), keys.WRITE_THROUGH_TTL)
    leaderboard_like_queue(pipe, author_id=author_id, delta=delta)
    if not invalidate_now(POST.name, post_id, pipe=pipe):
        # Cache role: fail open. The post's entry is in the outbox; the stats missed this
        # like, so they go too; the leaderboard drifts until it expires or is rebuilt.
        _user_posts_invalidate(author_id)
    if liker is not None:  # a like, not an unlike: the liker's activity, the author's notification
        like_published(liker=liker, post_id=post_id, post_title=title, author_id=author_id)
