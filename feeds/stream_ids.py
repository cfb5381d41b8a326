"""Redis stream ids (`<ms>-<seq>`), the one grammar of feeds' cursors and notification ids.

`stream_id_or_none` reads user input (a bad id is None: ignore it); `stream_id_or_raise` reads
an id already checked (a bad one is a ValueError). Both accept exactly what Redis
accepts, so the text can go on to Redis as it came. The API takes the narrower
API_STREAM_ID (19 digits a part), which its OpenAPI pattern states in full.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

StreamId = tuple[int, int]

# ASCII digits only: \d also matches other scripts' digits, which int() reads but Redis refuses.
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})\Z")
PART_MAX = 2**64 - 1
FIRST: StreamId = (0, 0)
LAST: StreamId = (PART_MAX, PART_MAX)

# XRANGE and XREVRANGE as Kestrel's raw clients answer them (bytes: no decode_responses);
# redis-py's types cover every client mode at once, so readers cast their replies to this.
Entries = list[tuple[bytes, dict[bytes, bytes]]]

# Nineteen digits a part always fit Redis's 64 bits (real ids are a 13-digit millisecond
# time and a small sequence number), so a schema pattern can say everything.
API_STREAM_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")


def stream_id_or_none(text: str | None) -> StreamId | None:
    """`"1712345678901-0"` -> (1712345678901, 0); None for anything Redis would refuse.

    For user input: surrounding spaces, other digits or a part past 64 bits are None
    here, never an error from Redis later.
    """
    if not text:
        return None
    match = _STREAM_ID.match(text)
    if match is None:
        return None
    ms, seq = int(match.group(1)), int(match.group(2))
    return (ms, seq) if ms <= PART_MAX and seq <= PART_MAX else None


def stream_id_or_raise(text: str) -> StreamId:
    """`"1712345678901-3"` -> (1712345678901, 3); ValueError for anything Redis would refuse."""
    parsed = stream_id_or_none(text)
    if parsed is None:
        raise ValueError("Must be a stream id such as 1712345678901-0.")
    return parsed


def stream_id_text(value: StreamId) -> str:
    """(1712345678901, 0) -> `"1712345678901-0"`: normalised, without leading zeros."""
    return f"{value[0]}-{value[1]}"


# A post's place in a list of posts is `<created_at ms>-<post id>`: unique, in the order
# of the posts, and a stream id, so timelines and the database's pages share one cursor.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def ms_since_epoch(moment: datetime) -> int:
    """A moment as whole milliseconds since the epoch (what a stream id's first part is)."""
    return (moment - _EPOCH) // _MS


def post_stream_id(created_at: datetime, post_id: int) -> str:
    """The cursor of a post in any list of posts: `<created_at ms>-<post id>`."""
    return f"{ms_since_epoch(created_at)}-{post_id}"


# The last millisecond a datetime can hold, less one (a page query adds one): a cursor
# past it (Redis takes 64-bit milliseconds, Python's datetimes end in 9999) means
# "before everything", not an overflow.
_LAST_MS = ms_since_epoch(datetime.max.replace(tzinfo=UTC)) - 1


def posts_before(stream_id: str) -> tuple[datetime, int]:
    """What `before=<stream id>` means to a query of posts: (the start of that millisecond,
    the post id), as posts.selectors.post_list_by_authors takes it. ValueError if malformed.

    A millisecond past year 9999 is clamped there: every post comes before it.
    """
    ms, seq = stream_id_or_raise(stream_id)
    return _EPOCH + min(ms, _LAST_MS) * _MS, seq
