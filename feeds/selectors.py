"""Reads of the feeds app: activity streams and home timelines, newest first, by stream id.

A page is one XREVRANGE from `(before`; its last id is the next page's `before`. A
missing timeline is rebuilt from the database under a lease (core.rebuild). Failure
policy: a timeline is read from the database when the state role does not answer; an
activity stream is the only copy of what it records, so its reads raise (a 503). Post
data comes from the caller (posts.selectors passes its readers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol, TypedDict, cast

from accounts.models import Follow
from accounts.selectors import user_profiles
from core import metrics
from core.rebuild import Lease, rebuild
from core.redis import RedisClient, RedisPipeline, fail_open, get_redis
from feeds import keys
from feeds.stream_ids import Entries, ms_since_epoch, posts_before

logger = logging.getLogger(__name__)

ACTIVITY_COUNT_DEFAULT = 50
FEED_COUNT_DEFAULT = 20
COUNT_MAX = 100

# What feeds needs of posts, passed in by the caller (posts.selectors passes its own).


class PostDetails(Protocol):
    """Posts as a page shows them, in the order of `post_ids`; None for one that no longer exists."""

    def __call__(self, *, post_ids: list[int]) -> list[dict | None]: ...


class PostsByAuthors(Protocol):
    """(post id, author id, created_at) of the newest `limit` posts by `author_ids` (a list, or
    a query of ids), newest first. With `before` (the start of a millisecond, a post id):
    only posts created before that millisecond, or within it with a smaller id."""

    def __call__(
        self, *, author_ids: Iterable[int], limit: int, before: tuple[datetime, int] | None = None
    ) -> list[tuple[int, int, datetime]]: ...


class ActivityItem(TypedDict):
    """One line of an activity page, as the API shows it."""

    id: str
    action: str
    targetId: int  # the API's field name
    timestamp: int


def _xrevrange_max(before: str | None) -> str:
    return f"({before}" if before else "+"


def _fields(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in raw.items()}


# --- Activity ---------------------------------------------------------------------------------


def activity_page(
    *, user_id: int, count: int = ACTIVITY_COUNT_DEFAULT, before: str | None = None, post_details: PostDetails
) -> dict:
    """{"items": [{"id", "action", "targetId", "timestamp"}], "next"}: what `user_id` did, newest first.

    Entries about a post or person that no longer exists are left out (the posts and
    profiles come from their caches, `post_details` and accounts' profiles: at most an
    MGET each, and a query for the misses); `next` still moves past them.
    """
    if before == "0-0":  # nothing comes before the first possible id (and Redis refuses "(0-0")
        return {"items": [], "next": None}
    key = keys.user_activity(user_id)
    entries = cast(Entries, get_redis("state").xrevrange(key, max=_xrevrange_max(before), min="-", count=count))
    rows: list[ActivityItem] = []
    for entry_id, raw in entries:
        fields = _fields(raw)
        rows.append(
            {
                "id": entry_id.decode(),
                "action": fields["action"],
                "targetId": int(fields["targetId"]),
                "timestamp": int(fields["timestamp"]),
            }
        )
    post_ids = list({row["targetId"] for row in rows if row["action"] != "followed"})
    user_ids = list({row["targetId"] for row in rows if row["action"] == "followed"})
    posts = {pk for pk, post in zip(post_ids, post_details(post_ids=post_ids), strict=True) if post is not None}
    users = {pk for pk, user in zip(user_ids, user_profiles(user_ids=user_ids), strict=True) if user is not None}
    items = [row for row in rows if row["targetId"] in (users if row["action"] == "followed" else posts)]
    return {"items": items, "next": rows[-1]["id"] if len(rows) == count else None}


# --- Home timeline ------------------------------------------------------------------------------


def timeline_page(
    *,
    user_id: int,
    count: int = FEED_COUNT_DEFAULT,
    before: str | None = None,
    post_details: PostDetails,
    posts_by_authors: PostsByAuthors,
) -> dict:
    """{"items": [{"id", "post"}], "next"}: posts by the people `user_id` follows, newest first.

    One round trip when the timeline is in Redis (EXISTS and XREVRANGE in one MULTI),
    then the posts from their cache (`post_details`, posts.selectors': the L1, one MGET, a
    query for the misses only): a deleted post is hidden, and a post a rerun fan-out
    delivered twice is shown once. A missing timeline is rebuilt, and a page Redis
    cannot serve is read, from `posts_by_authors`.
    """
    if before == "0-0":
        return {"items": [], "next": None}
    client = get_redis("state")
    rows: list[tuple[str, int]] | None = None
    # Fail open: a timeline is derived from the database, which can answer alone.
    with fail_open(
        "feeds.timeline_error",
        "Timeline of user %s read from the database: state Redis unavailable",
        user_id,
        log=logger,
    ):
        rows = _timeline_read(client, user_id, count, before)
        if rows is None and _timeline_rebuild(client, user_id, posts_by_authors):
            rows = _timeline_read(client, user_id, count, before) or []
    if rows is None:
        metrics.incr("feeds.timeline_from_db")
        followed = _followed_posts(user_id, count, before, posts_by_authors=posts_by_authors)
        rows = [(stream_id, post_id) for stream_id, post_id, _ in followed]

    posts = post_details(post_ids=[post_id for _, post_id in rows])
    items, shown = [], set()
    for (stream_id, post_id), post in zip(rows, posts, strict=True):
        if post is not None and post_id not in shown:
            shown.add(post_id)
            items.append({"id": stream_id, "post": post})
    return {"items": items, "next": rows[-1][0] if len(rows) == count else None}


def _timeline_read(client: RedisClient, user_id: int, count: int, before: str | None) -> list[tuple[str, int]] | None:
    """(stream id, post id) newest first; None when the timeline is missing (rebuild it)."""
    pipe = client.pipeline(transaction=True)
    pipe.exists(keys.user_timeline(user_id))
    pipe.xrevrange(keys.user_timeline(user_id), max=_xrevrange_max(before), min="-", count=count)
    exists, entries = pipe.execute()
    if not exists:
        return None
    metrics.incr("feeds.timeline_hit")
    return [(stream_id.decode(), int(raw[b"post"])) for stream_id, raw in entries]


def _followed_posts(
    user_id: int, limit: int, before: str | None = None, *, posts_by_authors: PostsByAuthors
) -> list[tuple[str, int, int]]:
    """(stream id, post id, author id) of the newest posts by people `user_id` follows.

    Ids are `<created_at ms>-<post id>`: unique, and in the order of the posts. With
    `before` (a database-served page), posts before that id in the same order. One
    query: the followees are a subquery of it.
    """
    followees = Follow.objects.filter(follower_id=user_id).values_list("followee_id", flat=True)
    rows = posts_by_authors(author_ids=followees, limit=limit, before=posts_before(before) if before else None)
    # Sorted by (ms, id), not (created_at, id): two posts in one millisecond must still
    # get increasing ids, or XADD refuses the second.
    ordered = sorted(((ms_since_epoch(created), pk, author) for pk, author, created in rows), reverse=True)
    return [(f"{ms}-{pk}", pk, author) for ms, pk, author in ordered]


def _timeline_rebuild(client: RedisClient, user_id: int, posts_by_authors: PostsByAuthors) -> bool:
    """Store `user_id`'s timeline from the database; False if another process holds the
    rebuild lease, or a fan-out or follow change deleted it while we read (core.rebuild)."""
    key = keys.user_timeline(user_id)

    def store(pipe: RedisPipeline, rows: list[tuple[str, int, int]]) -> None:
        pipe.delete(key)
        # Created empty (XADD then trimmed to nothing in the same command): a
        # timeline with no posts still exists, so "missing" always means "rebuild".
        pipe.xadd(key, {"built": 1}, id="0-1", maxlen=0, approximate=False)
        for stream_id, post_id, author_id in reversed(rows):
            pipe.xadd(key, {"post": post_id, "author": author_id}, id=stream_id)

    rebuilt = rebuild(
        client,
        family=keys.TIMELINE_FAMILY,
        load=lambda: _followed_posts(user_id, keys.STREAM_MAXLEN, posts_by_authors=posts_by_authors),
        store=store,
        lease=Lease(keys.user_timeline_rebuild(user_id), keys.TIMELINE_REBUILD_LEASE_MS),
    )
    return rebuilt.stored
