"""Redis stream ids (`<ms>-<seq>`), the one grammar of feeds' cursors and notification ids.

`stream_id_or_none` reads user input (a bad id is None: ignore it); `stream_id_or_raise` reads
an id already checked (a bad one is a ValueError). Both accept exactly what Redis
accepts, so the text can go on to Redis as it came. The API takes the narrower
API_STREAM_ID (19 digits a part), which its OpenAPI pattern states in full.
"""

from __future__ import annotations

import re

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
