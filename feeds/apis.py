"""The home timeline (GET /api/feed) and activity streams (GET /api/users/{id}/activity).

Thin: validate the query, call one selector. Both page by stream id (`?before=<id>`,
the `next` of the previous page) and take `?count=` from 1 to 100.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import user_profile
from feeds import selectors


class StreamIdField(serializers.CharField):
    """A stream id cursor such as `1712345678901-0`; anything else is a 400, never a Redis error."""

    def to_internal_value(self, data) -> str:
        value = super().to_internal_value(data)
        try:
            ms, seq = selectors.stream_id_parse(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return f"{ms}-{seq}"  # normalised: no leading zeros


class FeedQuerySerializer(serializers.Serializer):
    count = serializers.IntegerField(min_value=1, max_value=selectors.COUNT_MAX, default=selectors.FEED_COUNT_DEFAULT)
    before = StreamIdField(required=False, max_length=41)


class ActivityQuerySerializer(FeedQuerySerializer):
    count = serializers.IntegerField(
        min_value=1, max_value=selectors.COUNT_MAX, default=selectors.ACTIVITY_COUNT_DEFAULT
    )


def _parameters(default_count: int) -> list[OpenApiParameter]:
    return [
        OpenApiParameter("count", int, description=f"1 to {selectors.COUNT_MAX}, default {default_count}"),
        OpenApiParameter("before", str, description="a stream id: the `next` of the previous page"),
    ]


class FeedApi(APIView):
    """Posts by the people you follow, newest first."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=_parameters(selectors.FEED_COUNT_DEFAULT), responses={200: dict})
    def get(self, request: Request) -> Response:
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.timeline_page(user_id=request.user.pk, **query.validated_data))


class UserActivityApi(APIView):
    """What someone did (posted, liked, followed), newest first: the article's activity feed."""

    permission_classes = [AllowAny]

    @extend_schema(parameters=_parameters(selectors.ACTIVITY_COUNT_DEFAULT), responses={200: dict})
    def get(self, request: Request, user_id: int) -> Response:
        query = ActivityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if user_profile(user_id=user_id) is None:
            raise NotFound("User not found")
        return Response({"userId": user_id, **selectors.activity_page(user_id=user_id, **query.validated_data)})
