"""Writes of the feeds app: follows, activity streams and the fan-out to home timelines.

Redis writes run after commit on the state role (feeds.keys), one pipeline each. A new
post is XADDed (NOMKSTREAM) to each follower's timeline with a DEL of its rebuild lease:
inline up to FANOUT_INLINE_MAX_FOLLOWERS followers, else by the fan-out job. Failure
policy: activity and notifications fail open (counted, logged, lost); a fan-out Redis
refused goes to the fan-out job, which RQ retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.typing import EncodableT, FieldT

from accounts.models import Follow, User
from accounts.selectors import follower_id_batches, follower_ids
from accounts.services import follow_mirror_update
from core import metrics
from core.batching import chunks
from core.commit import after_commit
from core.redis import RedisPipeline, fail_open, get_redis
from feeds import keys
from feeds.notifications import notification_queue_once, notifications_queue, notify
from jobs.models import Job
from jobs.queues import FANOUT_JOB
from jobs.services import job_enqueue

logger = logging.getLogger(__name__)

# Inline, a fan-out costs the request Redis work per follower (~13 ms for 100, make bench).
FANOUT_INLINE_MAX_FOLLOWERS = 100
FANOUT_BATCH = 500  # followers per pipeline (and per SSCAN): ~1,000 commands, well under 1 ms of Redis time

POSTED, LIKED, FOLLOWED = "posted", "liked", "followed"


class PublishedPost(Protocol):
    """What a fan-out reads of a new post; posts.models.Post is one (feeds imports no posts)."""

    pk: int
    author_id: int
    author: User
    title: str


class PostLoader(Protocol):
    """The post of a fan-out job, with its author; None once it is deleted (posts.selectors.post_with_author)."""

    def __call__(self, *, post_id: int) -> PublishedPost | None: ...


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of an activity entry's `timestamp` field."""
    return int(time.time() * 1000)


def _activity_xadd(pipe: RedisPipeline, *, user_id: int, action: str, target_id: int) -> None:
    """Queue one activity entry in `pipe`: XADD MAXLEN ~ STREAM_MAXLEN, trimmed in the same command."""
    pipe.xadd(
        keys.user_activity(user_id),
        {"action": action, "targetId": target_id, "timestamp": now_ms()},
        maxlen=keys.STREAM_MAXLEN,
        approximate=True,
    )


def activity_add(*, user_id: int, action: str, target_id: int) -> str | None:
    """Append to `user_id`'s activity stream (XADD MAXLEN ~); its stream id, None if lost."""
    # Fail open: the action itself is committed; only its line in the feed is lost.
    with fail_open(
        "feeds.activity_lost",
        "Activity %r of user %s lost: state Redis unavailable",
        action,
        user_id,
        log=logger,
        action=action,
    ):
        pipe = get_redis("state").pipeline(transaction=False)
        _activity_xadd(pipe, user_id=user_id, action=action, target_id=target_id)
        (stream_id,) = pipe.execute()
        return stream_id.decode()
    return None


# --- New posts ---------------------------------------------------------------------------


def timeline_fanout_schedule(*, post: PublishedPost) -> None:
    """Call inside the transaction that creates `post`: plan its fan-out for after commit.

    The follower ids are read with LIMIT FANOUT_INLINE_MAX_FOLLOWERS + 1, so deciding
    costs the same for an author with a million followers as for one with ten, and a
    small fan-out needs no other read. A popular author's post becomes a job row in this
    same transaction (the jobs outbox): if the post commits, so does its fan-out, even
    if Redis is away at that moment.
    """
    rows = Follow.objects.filter(followee_id=post.author_id).order_by("pk").values_list("follower_id", flat=True)
    followers = list(rows[: FANOUT_INLINE_MAX_FOLLOWERS + 1])
    if len(followers) > FANOUT_INLINE_MAX_FOLLOWERS:
        job_enqueue(kind=FANOUT_JOB, owner=post.author, payload={"postId": post.pk})
        after_commit(activity_add, user_id=post.author_id, action=POSTED, target_id=post.pk)
    else:
        after_commit(_fanout_inline, post, followers)


def _fanout_inline(post: PublishedPost, followers: list[int] | None = None) -> None:
    """After commit, in the request: the author's activity and every timeline, in one pipeline.

    `followers` (ids) come from the post's transaction; without them, the follower set
    is read first (one round trip more).
    """
    # The job retries until Redis answers; a pipeline that died half-way may have
    # written some entries already, which readers show once.
    with fail_open(
        "feeds.fanout_deferred", "Fan-out of post %s deferred to a job: state Redis unavailable", post.pk, log=logger
    ) as outcome:
        if followers is None:
            followers = follower_ids(user_id=post.author_id)
        recipients = timeline_fanout(post=post, batches=chunks(followers, FANOUT_BATCH), activity=True)
    if outcome.failed:
        job_enqueue(kind=FANOUT_JOB, owner=post.author, payload={"postId": post.pk, "activity": True})
        return
    metrics.incr("feeds.fanout", mode="inline")
    logger.debug("Post %s fanned out to %s timelines", post.pk, recipients)


def timeline_fanout(*, post: PublishedPost, batches: Iterable[Sequence[int]], activity: bool = False) -> int:
    """XADD `post` to the timelines of each batch of follower ids, one pipeline per batch.

    Each batch's followers are notified in the same pipeline, after their entries:
    one round trip for both.
    With `activity`, the author's own "posted" entry rides in the first pipeline.
    Returns how many timelines were written to (missing ones are skipped, see the
    module doc).
    """
    client = get_redis("state")
    entry: dict[FieldT, EncodableT] = {"post": post.pk, "author": post.author_id}
    message = f"@{post.author.username} posted “{post.title}”"
    data = {"postId": post.pk, "userId": post.author_id}
    written = 0
    pending_activity = activity
    for batch in batches:
        if not batch and not pending_activity:
            continue
        pipe = client.pipeline(transaction=False)
        if pending_activity:
            _activity_xadd(pipe, user_id=post.author_id, action=POSTED, target_id=post.pk)
        for follower_id in batch:
            pipe.xadd(
                keys.user_timeline(follower_id),
                entry,
                maxlen=keys.STREAM_MAXLEN,
                approximate=True,
                nomkstream=True,
            )
            pipe.delete(keys.user_timeline_rebuild(follower_id))
        notifications_queue(pipe, user_ids=batch, kind="post", message=message, data=data)
        replies = pipe.execute()
        if pending_activity:
            replies, pending_activity = replies[1:], False
        written += sum(1 for stream_id in replies[: 2 * len(batch) : 2] if stream_id is not None)
        metrics.incr("notifications.sent", len(batch), kind="post")
    if pending_activity:  # no followers at all
        activity_add(user_id=post.author_id, action=POSTED, target_id=post.pk)
    return written


def timeline_fanout_run(*, job: Job, post_load: PostLoader) -> dict:
    """The fan-out job (posts.jobs.fanout_post): every follower, by SSCAN batches.

    Acts once per job row, like every Kestrel job; a run killed half-way runs again from
    the start, and readers drop the entries it repeats. The post comes from `post_load`.
    """
    if job.completed_at is not None:
        # Written with completed_at, in the one UPDATE below.
        return cast(dict, job.result)
    post = post_load(post_id=job.payload["postId"])
    if post is None:
        result = {"postId": job.payload["postId"], "timelines": 0, "skipped": "post deleted"}
    else:
        batches = follower_id_batches(user_id=post.author_id, size=FANOUT_BATCH)
        written = timeline_fanout(post=post, batches=batches, activity=bool(job.payload.get("activity")))
        result = {"postId": post.pk, "timelines": written}
        metrics.incr("feeds.fanout", mode="job")
    Job.objects.filter(pk=job.pk, completed_at=None).update(completed_at=timezone.now(), result=result)
    return result


# --- Follows and likes ---------------------------------------------------------------------


class AlreadyFollowing(Exception):
    """follow_create: the follow exists already (the API's 409)."""


class NotFollowing(Exception):
    """follow_delete: there was no follow to delete (the API's 404)."""


def follow_create(*, follower: User, followee: User) -> Follow:
    """`follower` follows `followee`. ValidationError for oneself; AlreadyFollowing the second time.

    After commit: the Redis mirror of the graph (accounts.services.follow_mirror_update),
    then the follower's activity and timeline and a notification to the followee
    (follow_effects_apply). A follow that fails writes nothing at all.
    """
    if follower.pk == followee.pk:
        raise ValidationError("You cannot follow yourself.")
    with transaction.atomic():
        try:
            # A savepoint: the unique constraint, not a prior SELECT, decides between two
            # concurrent follows, and the loser's transaction stays usable.
            with transaction.atomic():
                follow = Follow.objects.create(follower=follower, followee=followee)
        except IntegrityError:
            raise AlreadyFollowing from None
        after_commit(follow_mirror_update, follower_id=follower.pk, followee_id=followee.pk, added=True)
        after_commit(follow_effects_apply, follower=follower, followee=followee)
    return follow


def follow_delete(*, follower: User, followee: User) -> None:
    """`follower` stops following `followee`; NotFollowing if they did not. New posts stop
    reaching the follower's timeline at once (the mirror changes after commit)."""
    with transaction.atomic():
        deleted, _ = Follow.objects.filter(follower=follower, followee=followee).delete()
        if not deleted:
            raise NotFollowing
        after_commit(follow_mirror_update, follower_id=follower.pk, followee_id=followee.pk, added=False)
        after_commit(unfollow_effects_apply, follower_id=follower.pk)


def follow_effects_apply(*, follower: User, followee: User) -> None:
    """After a follow commits, one round trip: the follower's activity, their timeline, the
    followee's notification (once per window).

    The timeline is dropped (with its rebuild lease) rather than back-filled: a stream
    only appends, so the followee's earlier posts cannot be slotted in among the older
    entries; the next read rebuilds it from the database, their posts included.
    """
    # Fail open: the follow is committed. Lost: the activity line, the notification,
    # and until the timeline is next rebuilt, the followee's older posts (new ones
    # arrive anyway).
    with fail_open(
        "feeds.activity_lost",
        "Follow %s -> %s: activity and timeline not updated",
        follower.pk,
        followee.pk,
        log=logger,
        action=FOLLOWED,
    ) as outcome:
        pipe = get_redis("state").pipeline(transaction=False)
        _activity_xadd(pipe, user_id=follower.pk, action=FOLLOWED, target_id=followee.pk)
        pipe.delete(keys.user_timeline(follower.pk), keys.user_timeline_rebuild(follower.pk))
        notification_queue_once(
            pipe,
            user_id=followee.pk,
            claim=keys.notified_once("follow", follower.pk, followee.pk, recipient_id=followee.pk),
            window=keys.NOTIFY_ONCE_WINDOW,
            kind="follow",
            message=f"@{follower.username} followed you",
            data={"userId": follower.pk, "username": follower.username},
        )
        *_, notification_id = pipe.execute()
    if outcome.failed:
        metrics.incr("notifications.lost", kind="follow")
        return
    if notification_id is not None:
        metrics.incr("notifications.sent", kind="follow")


def unfollow_effects_apply(*, follower_id: int) -> None:
    """After an unfollow commits: drop the follower's timeline, so the rebuild leaves out the
    unfollowed person's earlier posts too (new ones stop at once: the fan-out reads the
    follow graph, which no longer has the edge)."""
    # Fail open: the unfollow is committed; the timeline keeps the unfollowed person's
    # earlier posts until it is next dropped.
    with fail_open("feeds.timeline_drop_lost", "Unfollow by %s: timeline not dropped", follower_id, log=logger):
        get_redis("state").delete(keys.user_timeline(follower_id), keys.user_timeline_rebuild(follower_id))


def like_effects_apply(*, liker: User, post_id: int, post_title: str, author_id: int) -> None:
    """After a like commits, one round trip: the liker's activity and the author's notification
    (once per window)."""
    # Fail open: the like is committed; its activity line and notification are lost.
    with fail_open(
        "feeds.activity_lost",
        "Like of post %s by user %s: activity and notification lost",
        post_id,
        liker.pk,
        log=logger,
        action=LIKED,
    ) as outcome:
        pipe = get_redis("state").pipeline(transaction=False)
        _activity_xadd(pipe, user_id=liker.pk, action=LIKED, target_id=post_id)
        notification_queue_once(
            pipe,
            user_id=author_id,
            claim=keys.notified_once("like", liker.pk, post_id, recipient_id=author_id),
            window=keys.NOTIFY_ONCE_WINDOW,
            kind="like",
            message=f"@{liker.username} liked “{post_title}”",
            data={"postId": post_id, "userId": liker.pk},
        )
        *_, notification_id = pipe.execute()
    if outcome.failed:
        metrics.incr("notifications.lost", kind="like")
        return
    if notification_id is not None:
        metrics.incr("notifications.sent", kind="like")


# --- Reports -------------------------------------------------------------------------------


def report_ready_notify(*, user_id: int, job_id: str, download: str, summary: dict) -> None:
    """After a report's job completes: tell its owner, with the totals and the download link.

    `summary` is the report's {"posts", "views", "likes"} (posts.reports). Fails open,
    as notify() does: the report and its email are there either way.
    """
    notify(
        user_id=user_id,
        kind="report",
        message=(
            f"Your activity report is ready: {summary['posts']} posts, {summary['views']} views, "
            f"{summary['likes']} likes."
        ),
        data={"jobId": job_id, "download": download},
    )
