"""The follow API (POST and DELETE /api/users/{id}/follow): thin, the work is in feeds.services.

Timelines and activity are served by posts.apis (they show posts); notifications by
feeds.notification_apis.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from core.schema import api_error
from core.types import AuthenticatedRequest
from feeds import services


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
    def post(self, request: AuthenticatedRequest, user_id: int) -> Response:
        followee = _active_user(user_id)
        try:
            services.follow_create(follower=request.user, followee=followee)
        except services.AlreadyFollowing:
            return Response({"error": "You already follow this user"}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"userId": exc.messages}) from None
        return Response({"following": True, "userId": user_id}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: AuthenticatedRequest, user_id: int) -> Response:
        followee = _active_user(user_id)
        try:
            services.follow_delete(follower=request.user, followee=followee)
        except services.NotFollowing:
            raise NotFound("You do not follow this user") from None
        return Response(status=status.HTTP_204_NO_CONTENT)
