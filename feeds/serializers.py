"""Serializers of the feeds app shared with other apps: stream ids, and the query of a
feeds page (posts.apis' GET /api/feed and GET /api/users/{id}/activity take it).

Feeds' pages page by stream id (`?before=<id>`, the `next` of the previous page) and
take `?count=` from 1 to 100.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import QuerySerializer
from feeds import selectors
from feeds.stream_ids import API_STREAM_ID, stream_id_or_raise, stream_id_text

STREAM_ID_SCHEMA = {"type": "string", "pattern": f"^{API_STREAM_ID.pattern}$", "example": "1712345678901-0"}


@extend_schema_field(STREAM_ID_SCHEMA)
class StreamIdField(serializers.CharField):
    """A stream id such as `1712345678901-0` (a page cursor, a notification id); anything
    else is a 400, never a Redis error. Taken as sent: no trimming, no other digits."""

    default_error_messages = {"invalid": "Must be a stream id such as 1712345678901-0."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: str) -> str:
        value = super().to_internal_value(data)
        if not API_STREAM_ID.fullmatch(value):
            self.fail("invalid")
        return stream_id_text(stream_id_or_raise(value))  # normalised: no leading zeros


class FeedQuerySerializer(QuerySerializer):
    count = serializers.IntegerField(
        min_value=1,
        max_value=selectors.COUNT_MAX,
        default=selectors.FEED_COUNT_DEFAULT,
        help_text=f"1 to {selectors.COUNT_MAX}, default {selectors.FEED_COUNT_DEFAULT}",
    )
    before = StreamIdField(required=False, help_text="a stream id: the `next` of the previous page")


class ActivityQuerySerializer(FeedQuerySerializer):
    count = serializers.IntegerField(
        min_value=1,
        max_value=selectors.COUNT_MAX,
        default=selectors.ACTIVITY_COUNT_DEFAULT,
        help_text=f"1 to {selectors.COUNT_MAX}, default {selectors.ACTIVITY_COUNT_DEFAULT}",
    )
