"""The home timeline (GET /api/feed) and activity streams (GET /api/users/{id}/activity).

Thin: validate the query, call one selector. Both page by stream id (`?before=<id>`,
the `next` of the previous page) and take `?count=` from 1 to 100.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.selectors import user_profile
from core.api import QuerySerializer
from core.schema import api_error
from feeds import selectors, services
from posts.apis import PostSerializer

# Nineteen ASCII digits a part: always within Redis's 64-bit parts (real ids are a
# 13-digit millisecond time and a small sequence number), and exactly what the schema says.
_STREAM_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")
STREAM_ID_SCHEMA = {"type": "string", "pattern": f"^{_STREAM_ID.pattern}$", "example": "1712345678901-0"}


@extend_schema_field(STREAM_ID_SCHEMA)
class StreamIdField(serializers.CharField):
    """A stream id such as `1712345678901-0` (a page cursor, a notification id); anything
    else is a 400, never a Redis error. Taken as sent: no trimming, no other digits."""

    default_error_messages = {"invalid": "Must be a stream id such as 1712345678901-0."}

    def __init__(self, **kwargs) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data) -> str:
        value = super().to_internal_value(data)
        if not _STREAM_ID.fullmatch(value):
            self.fail("invalid")
        ms, seq = value.split("-")
        return f"{int(ms)}-{int(seq)}"  # normalised: no leading zeros


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


_FeedPageSerializer = inline_serializer(
    "FeedPage",
    {
        "items": inline_serializer("FeedItem", {"id": serializers.CharField(), "post": PostSerializer}, many=True),
        "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
    },
)
_ActivityPageSerializer = inline_serializer(
    "ActivityPage",
    {
        "userId": serializers.IntegerField(),
        "items": inline_serializer(
            "ActivityItem",
            {
                "id": serializers.CharField(),
                "action": serializers.CharField(help_text="posted, liked or followed"),
                "targetId": serializers.IntegerField(help_text="a post, or a person for `followed`"),
                "timestamp": serializers.IntegerField(help_text="milliseconds since the epoch"),
            },
            many=True,
        ),
        "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
    },
)


class FeedApi(APIView):
    """Posts by the people you follow, newest first."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[FeedQuerySerializer], responses={200: _FeedPageSerializer})
    def get(self, request: Request) -> Response:
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.timeline_page(user_id=request.user.pk, **query.validated_data))


class UserActivityApi(APIView):
    """What someone did (posted, liked, followed), newest first: the article's activity feed."""

    permission_classes = [AllowAny]

    @extend_schema(parameters=[ActivityQuerySerializer], responses={200: _ActivityPageSerializer})
    def get(self, request: Request, user_id: int) -> Response:
        query = ActivityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if user_profile(user_id=user_id) is None:
            raise NotFound("User not found")
        return Response({"userId": user_id, **selectors.activity_page(user_id=user_id, **query.validated_data)})


# --- Follows ---------------------------------------------------------------------------------


def _active_user(user_id: int) -> User:
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise NotFound("User not found")
    return user


class UserFollowApi(APIView):
    """POST follows the user (201), DELETE unfollows (204)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "Followed", {"following": serializers.BooleanField(), "userId": serializers.IntegerField()}
            ),
            400: api_error("You cannot follow yourself"),
            409: api_error("You already follow this user"),
        },
    )
    def post(self, request: Request, user_id: int) -> Response:
        followee = _active_user(user_id)
        try:
            services.follow_create(follower=request.user, followee=followee)
        except services.AlreadyFollowing:
            return Response({"error": "You already follow this user"}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"userId": exc.messages}) from None
        return Response({"following": True, "userId": user_id}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, user_id: int) -> Response:
        followee = _active_user(user_id)
        try:
            services.follow_delete(follower=request.user, followee=followee)
        except services.NotFollowing:
            raise NotFound("You do not follow this user") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
