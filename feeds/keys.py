"""Redis keys and limits of the feeds app (activity streams, timelines, notifications).

Hash tags (core.keys): a user's id for every key of that user, so a timeline and its
rebuild lease, or the notifications and their read marker, share a slot; a
once-per-window claim takes its recipient's. The user's pub/sub channels carry it too:
on a cluster they are shard channels, in that slot.
"""

from core.keys import key, tag_the_id

# The state role's families as named before hash tags (manage.py redis_rename_keys). The
# once-per-window claims (feeds:notified) are left to expire within NOTIFY_ONCE_WINDOW:
# a like's old name lacks its recipient, and a lost claim costs at most one repeated
# notification.
RENAMES = (tag_the_id("feeds:user"),)

# --- Activity streams and home timelines (state role) --------------------------------------

STREAM_MAXLEN = 1000  # XADD ... MAXLEN ~ 1000: trimmed in the same command


def user_activity(user_id: int) -> str:
    """STREAM, state role, no TTL, MAXLEN ~STREAM_MAXLEN: what a user did (posted, liked, followed)."""
    return key("feeds", "user", user_id, "activity")


def user_timeline(user_id: int) -> str:
    """STREAM, state role, no TTL, MAXLEN ~STREAM_MAXLEN: posts by the people a user follows.

    Rebuilt from the database when missing (see feeds.selectors), so losing it costs a rebuild.
    """
    return key("feeds", "user", user_id, "timeline")


TIMELINE_FAMILY = "timeline"  # the `family` of its rebuild metrics (cache.rebuilt, cache.rebuild_busy, ...)
TIMELINE_REBUILD_LEASE_MS = 5_000  # a rebuild reads at most STREAM_MAXLEN posts


def user_timeline_rebuild(user_id: int) -> str:
    """STRING (lease token), state role, TIMELINE_REBUILD_LEASE_MS: a rebuild of user_timeline in flight.

    Fan-out and follow changes delete it, so a rebuild whose database read they may
    postdate fails its EXEC (it WATCHes this key) instead of storing a stale timeline.
    """
    return key("feeds", "user", user_id, "timeline_rebuild")


# --- Notifications (state role) ----------------------------------------------------------

NOTIFICATIONS_MAXLEN = 500


def user_notifications(user_id: int) -> str:
    """STREAM, state role, no TTL, MAXLEN ~NOTIFICATIONS_MAXLEN: a user's notifications,
    kept so a reconnecting browser replays what it missed (Last-Event-ID)."""
    return key("feeds", "user", user_id, "notifications")


def user_notifications_read(user_id: int) -> str:
    """STRING (stream id), state role, no TTL: the newest notification the user has read."""
    return key("feeds", "user", user_id, "notifications_read")


# A like or a follow notifies once an hour per (actor, target): toggling must not flood anyone.
NOTIFY_ONCE_WINDOW = 60 * 60  # s


def notified_once(kind: str, actor_id: int, target_id: int, *, recipient_id: int) -> str:
    """STRING "1", state role, NOTIFY_ONCE_WINDOW (SET NX EX): `actor_id`'s `kind`
    notification about `target_id` (a post liked, a person followed) went out; while it
    lives, the same one is not sent again.

    In the recipient's hash slot (tag `recipient_id`): the notification's script claims
    it and appends to the recipient's user_notifications in one step.
    """
    return key("feeds", "notified", f"{kind}.{actor_id}.{target_id}", tag=recipient_id)


def user_channel(user_id: int) -> str:
    """Pub/sub channel, state role: live notifications of one user (JSON with the stream id).

    On a cluster a shard channel (SPUBLISH, SSUBSCRIBE) in the user's hash slot, with the
    user's notifications and user_stream_control: the script that appends a notification
    publishes it on its own node, and feeds.sse subscribes to both channels on that one
    node with one connection.
    """
    return key("feeds", "user", user_id, "live")


# --- Notification streams (state role, feeds.stream_access) ------------------------------


def user_stream_leases(user_id: int) -> str:
    """ZSET (stream id -> lease expiry, ms since the Unix epoch), state role, TTL twice the
    lease from the last admission or refresh: a person's open notification streams on every
    process and host. The per-person cap counts its unexpired members; a crashed process's
    streams fall out when their leases run out."""
    return key("feeds", "user", user_id, "stream_leases")


def user_stream_control(user_id: int) -> str:
    """Pub/sub channel, state role: revocations (a logged-out session, revoked token families,
    a new token epoch) that end the person's open notification streams at once. On a
    cluster a shard channel in the person's slot, as user_channel."""
    return key("feeds", "user", user_id, "stream_control")
