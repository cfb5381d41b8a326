"""Notifications: a per-user Redis stream, pushed live over pub/sub (to SSE).

One Lua script XADDs the entry and PUBLISHes it (SPUBLISH on a cluster) with its stream
id, the notification's id everywhere (the JSON, the SSE `id:`, the list API, the read
marker): a browser that missed live messages replays them with one XRANGE after its
last id. Failure policy (state role): notify() fails open, counted and logged; the
APIs that exist only to show or send notifications let the error become a 503.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator, Sequence
from typing import TypedDict, cast

from django.utils import timezone
from redis.commands.core import Script
from redis.typing import EncodableT, KeyT

from core import metrics
from core.redis import RedisClient, RedisPipeline, fail_open, get_redis, is_cluster
from core.scripts import script_queue
from feeds import keys
from feeds.stream_ids import FIRST, LAST, Entries, stream_id_or_none, stream_id_or_raise

logger = logging.getLogger(__name__)

MESSAGE_MAX_LENGTH = 500  # characters; longer messages are cut (notify) or refused (POST /api/notify)
LIST_MAX_COUNT = 100  # most notifications one GET /api/notifications returns
UNREAD_COUNT_CAP = 100  # unread is counted up to this many; the badge shows "99+" from here

_KIND = re.compile(r"[a-z][a-z_]{0,31}\Z")


class Notification(TypedDict):
    """A notification as the API, the page and the SSE `data:` show it; `id` is its stream id."""

    id: str
    kind: str
    message: str
    data: dict
    at: str


# --- Writes ------------------------------------------------------------------------------

# Lua, not MULTI: the published message carries the id XADD assigns. Atomic, so nothing
# is published that a replay would miss; a claim key (SET NX EX) decides in the same script.
_NOTIFY = """
-- KEYS: [1] the user's notification stream, [2] optional: the claim of a once-per-window notification
-- ARGV: [1] MAXLEN (approximate), [2] the user's channel, [3] kind, [4] message,
--       [5] data (JSON), [6] at (ISO 8601), [7] the published JSON without its id: "{...}",
--       [8] with KEYS[2]: the claim's window in seconds
-- Returns the notification's id; nil when KEYS[2] was claimed already (nothing sent).
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[8]) then
  return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'kind', ARGV[3], 'message', ARGV[4], 'data', ARGV[5], 'at', ARGV[6])
redis.call('PUBLISH', ARGV[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[7], 2))
return id
"""
# On a cluster the user's channel is a shard channel (feeds.sse subscribes with SSUBSCRIBE):
# SPUBLISH sends the message to the nodes of the user's slot only, where the script runs
# (the channel has the stream's hash tag), instead of to every node of the cluster.
_NOTIFY_SHARDED = _NOTIFY.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")


def _notify_script(client: RedisClient | RedisPipeline) -> Script:
    """The notification script for the state role's client or pipeline: SPUBLISH on a cluster."""
    return _script(_NOTIFY_SHARDED if is_cluster(client) else _NOTIFY)


# Marking read only ever moves the marker forward (two tabs marking different pages
# cannot move it back) and never past the newest notification (nothing unseen is
# marked read in advance): a read that decides a write, hence one script.
_MARK_READ = """
-- KEYS: [1] the user's notification stream, [2] the user's read marker
-- ARGV: [1] the id to mark read up to, or "" for every notification so far
-- Returns the marker after the call (nil when there is nothing to mark).
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local current = redis.call('GET', KEYS[2])
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest == 0 then return current end
local target = newest[1][1]
if ARGV[1] ~= '' and less(ARGV[1], target) then target = ARGV[1] end
if current and not less(current, target) then return current end
redis.call('SET', KEYS[2], target)
return target
"""

# One round trip for a page of the list, the read marker and the unread count.
_LIST = """
-- KEYS: [1] the user's notification stream, [2] the user's read marker
-- ARGV: [1] XREVRANGE end ("+" or "(<id>" for "before <id>"), [2] page size, [3] unread cap
-- Returns {marker or nil, page (newest first), unread count up to the cap}.
local marker = redis.call('GET', KEYS[2])
local page = redis.call('XREVRANGE', KEYS[1], ARGV[1], '-', 'COUNT', ARGV[2])
local start = '-'
if marker then start = '(' .. marker end
local unread = #redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[3])
return {marker, page, unread}
"""


@functools.cache
def _script(source: str) -> Script:
    # Registered once per process; redis-py sends EVALSHA and reloads the script by
    # itself after a Redis restart (NOSCRIPT).
    return get_redis("state").register_script(source)


def notification_create(*, user_id: int, kind: str, message: str, data: dict | None = None) -> str:
    """Append a notification to the user's stream and publish it live; returns its id.

    Raises what Redis raises (the caller decides the failure policy); call after commit.
    """
    message, data_json, at, published = _prepared(kind, message, data)
    client = get_redis("state")
    # On the client whose kind chose the script (PUBLISH or SPUBLISH), not the one it was registered with.
    stream_id = _notify_script(client)(
        keys=[keys.user_notifications(user_id)],
        args=[keys.NOTIFICATIONS_MAXLEN, keys.user_channel(user_id), kind, message, data_json, at, published],
        client=client,
    )
    metrics.incr("notifications.sent", kind=kind)
    return stream_id.decode()


def _prepared(kind: str, message: str, data: dict | None) -> tuple[str, str, str, str]:
    if not _KIND.match(kind):
        raise ValueError(f"Notification kind {kind!r} must match {_KIND.pattern}")
    message = message.strip()
    if not message:
        raise ValueError("A notification needs a message")
    if len(message) > MESSAGE_MAX_LENGTH:
        message = message[: MESSAGE_MAX_LENGTH - 1] + "…"
    data_json = json.dumps(data or {}, separators=(",", ":"))
    at = timezone.now().isoformat(timespec="milliseconds")
    published = json.dumps({"kind": kind, "message": message, "data": data or {}, "at": at}, separators=(",", ":"))
    return message, data_json, at, published


def notifications_queue(
    pipe: RedisPipeline, *, user_ids: Sequence[int], kind: str, message: str, data: dict | None = None
) -> None:
    """Add the same notification for many users to a pipeline the caller executes.

    The fan-out puts them in the same pipeline as the timeline entries: one round trip
    for both. Their replies (the ids) follow a SCRIPT LOAD's (core.scripts). Count them
    with metrics.incr("notifications.sent", ...) once it ran.
    """
    message, data_json, at, published = _prepared(kind, message, data)
    calls: Iterator[tuple[list[KeyT], list[EncodableT]]] = (
        (
            [keys.user_notifications(user_id)],
            [keys.NOTIFICATIONS_MAXLEN, keys.user_channel(user_id), kind, message, data_json, at, published],
        )
        for user_id in user_ids
    )
    script_queue(pipe, _notify_script(pipe), calls)


def notification_queue_once(
    pipe: RedisPipeline, *, user_id: int, claim: str, window: int, kind: str, message: str, data: dict | None = None
) -> None:
    """Add to a pipeline one notification that goes out only if `claim` is free (SET NX EX
    `window` in the same script, so of two racing calls exactly one sends).

    Its reply, after a SCRIPT LOAD's, is the notification's id, or None when the claim
    was taken already. Count it with metrics.incr("notifications.sent", ...) if sent.
    """
    message, data_json, at, published = _prepared(kind, message, data)
    args: list[EncodableT] = [
        keys.NOTIFICATIONS_MAXLEN,
        keys.user_channel(user_id),
        kind,
        message,
        data_json,
        at,
        published,
        window,
    ]
    script_queue(pipe, _notify_script(pipe), [([keys.user_notifications(user_id), claim], args)])


def notify_many(*, user_ids: list[int], kind: str, message: str, data: dict | None = None) -> int:
    """The same notification for many users in one round trip (one pipeline of the script).

    Fails open like notify(); returns how many were recorded.
    """
    if not user_ids:
        return 0
    # Fail open: see the module docstring.
    with fail_open(
        "notifications.lost",
        "%s %r notifications lost: Redis unavailable",
        len(user_ids),
        kind,
        log=logger,
        amount=len(user_ids),
        kind=kind,
    ) as outcome:
        pipe = get_redis("state").pipeline(transaction=False)
        notifications_queue(pipe, user_ids=user_ids, kind=kind, message=message, data=data)
        pipe.execute()
    if outcome.failed:
        return 0
    metrics.incr("notifications.sent", len(user_ids), kind=kind)
    return len(user_ids)


def notify(*, user_id: int, kind: str, message: str, data: dict | None = None) -> str | None:
    """Record a notification for `user_id` and publish it live. Returns its stream id.

    Call it after commit. kind: "follow", "like", "post", "report", "message".
    Fails open (None) when Redis does not answer: see the module docstring.
    """
    # Fail open: what caused it has committed, and should not fail for its notification.
    with fail_open(
        "notifications.lost",
        "Notification %r for user %s lost: Redis unavailable",
        kind,
        user_id,
        log=logger,
        kind=kind,
    ):
        return notification_create(user_id=user_id, kind=kind, message=message, data=data)
    return None


def notifications_mark_read(*, user_id: int, up_to: str | None = None) -> str | None:
    """Mark the user's notifications read up to `up_to` (default: all). Returns the marker."""
    marker = _script(_MARK_READ)(
        keys=[keys.user_notifications(user_id), keys.user_notifications_read(user_id)],
        args=[up_to or ""],
    )
    return marker.decode() if marker else None


# --- Reads -------------------------------------------------------------------------------


def entry_to_notification(stream_id: bytes | str, fields: dict[bytes, bytes]) -> Notification:
    """One stream entry as the JSON the API, the page and the SSE `data:` share."""
    try:
        data = json.loads(fields.get(b"data", b"{}"))
    except ValueError:
        data = {}
    return {
        "id": stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
        "kind": fields.get(b"kind", b"").decode(),
        "message": fields.get(b"message", b"").decode(),
        "data": data if isinstance(data, dict) else {},
        "at": fields.get(b"at", b"").decode(),
    }


def notifications_after(*, user_id: int, after: str, count: int) -> list[Notification]:
    """Up to `count` notifications newer than `after` (exclusive), oldest first: a replay."""
    if stream_id_or_none(after) == LAST:
        # Nothing comes after the largest id, and Redis refuses an exclusive start
        # there ("invalid start ID") instead of answering with nothing.
        return []
    entries = cast(
        Entries, get_redis("state").xrange(keys.user_notifications(user_id), min=f"({after}", max="+", count=count)
    )
    return [entry_to_notification(stream_id, fields) for stream_id, fields in entries]


def notifications_newest_id(*, user_id: int) -> str | None:
    """The id of the user's newest notification (one XREVRANGE COUNT 1); None for none yet."""
    entries = cast(Entries, get_redis("state").xrevrange(keys.user_notifications(user_id), count=1))
    return entries[0][0].decode() if entries else None


def notification_list(*, user_id: int, count: int = 20, before: str | None = None) -> dict:
    """A page of the user's notifications, newest first, each flagged read or unread.

    `before` (exclusive) is the cursor of the next page, returned as `next`. `unread`
    counts unread notifications up to UNREAD_COUNT_CAP.
    """
    end = f"({before}" if before else "+"
    if before and stream_id_or_none(before) == FIRST:
        # Nothing comes before 0-0, and Redis refuses "(0-0" outright (an error, not an
        # empty page); the inclusive 0-0 matches no entry, which is the answer.
        end = "0-0"
    marker, page, unread = _script(_LIST)(
        keys=[keys.user_notifications(user_id), keys.user_notifications_read(user_id)],
        args=[end, count, UNREAD_COUNT_CAP],
    )
    read_up_to = stream_id_or_none(marker.decode()) if marker else None
    items = []
    for stream_id, flat in page:
        notification = entry_to_notification(stream_id, dict(zip(flat[::2], flat[1::2], strict=True)))
        items.append(
            {**notification, "unread": read_up_to is None or stream_id_or_raise(notification["id"]) > read_up_to}
        )
    return {
        "notifications": items,
        "unread": unread,
        "readUpTo": marker.decode() if marker else None,
        "next": items[-1]["id"] if len(items) == count else None,
    }
