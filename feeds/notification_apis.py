"""Notification API: the reference article's POST /api/notify, the list, mark-read, and
the live stream (Server-Sent Events, feeds.sse)."""

from __future__ import annotations

from typing import NoReturn

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import tokens
from accounts.authentication import JWTAuthentication, as_api_exception
from accounts.models import User
from core.api import BodySerializer, QuerySerializer
from core.http import error_response
from core.schema import api_error
from core.types import AuthenticatedRequest
from feeds import sse
from feeds.notifications import (
    LIST_MAX_COUNT,
    MESSAGE_MAX_LENGTH,
    UNREAD_COUNT_CAP,
    notification_create,
    notification_list,
    notifications_mark_read,
)
from feeds.serializers import StreamIdField
from feeds.stream_access import stream_credential
from feeds.stream_ids import stream_id_or_none

_NotificationSerializer = inline_serializer(
    "Notification",
    {
        "id": serializers.CharField(help_text="a stream id"),
        "kind": serializers.CharField(),
        "message": serializers.CharField(allow_blank=True),
        "data": serializers.DictField(),
        "at": serializers.CharField(help_text="ISO 8601"),
        "unread": serializers.BooleanField(),
    },
    many=True,
)


class NotifyApi(APIView):
    """POST /api/notify {"userId", "message"}: staff send a notification to anyone."""

    permission_classes = [IsAdminUser]

    class NotifyInputSerializer(BodySerializer):
        userId = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
        message = serializers.CharField(max_length=MESSAGE_MAX_LENGTH)

    def permission_denied(self, request: Request, message: str | None = None, code: str | None = None) -> NoReturn:
        if request.user and request.user.is_authenticated:
            raise PermissionDenied("Only staff can send notifications")
        super().permission_denied(request, message, code)

    @extend_schema(
        request=NotifyInputSerializer,
        responses={
            200: inline_serializer("NotifySent", {"sent": serializers.BooleanField(), "id": serializers.CharField()}),
            404: api_error("User not found"),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.NotifyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user_id = data.validated_data["userId"]
        if not User.objects.filter(pk=user_id, is_active=True).exists():
            raise NotFound("User not found")
        # Not notify(): this request exists to send it, so Redis failing is a 503, not a shrug.
        stream_id = notification_create(user_id=user_id, kind="message", message=data.validated_data["message"])
        return Response({"sent": True, "id": stream_id})


class NotificationListApi(APIView):
    """GET /api/notifications?count=&before=: the caller's notifications, newest first."""

    permission_classes = [IsAuthenticated]

    class ListParamsSerializer(QuerySerializer):
        count = serializers.IntegerField(
            min_value=1, max_value=LIST_MAX_COUNT, default=20, help_text=f"1 to {LIST_MAX_COUNT}, default 20"
        )
        before = StreamIdField(required=False, help_text="the `next` of the previous page")

    @extend_schema(
        parameters=[ListParamsSerializer],
        responses={
            200: inline_serializer(
                "NotificationPage",
                {
                    "notifications": _NotificationSerializer,
                    "unread": serializers.IntegerField(help_text=f"counted up to {UNREAD_COUNT_CAP}"),
                    "readUpTo": serializers.CharField(allow_null=True),
                    "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
                },
            )
        },
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        params = self.ListParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        return Response(notification_list(user_id=request.user.pk, **params.validated_data))


class NotificationReadApi(APIView):
    """POST /api/notifications/read {"upTo"?}: mark read up to an id, or everything."""

    permission_classes = [IsAuthenticated]

    class ReadInputSerializer(BodySerializer):
        upTo = StreamIdField(required=False)

    @extend_schema(
        request=ReadInputSerializer,
        responses={
            200: inline_serializer(
                "NotificationsRead",
                {"readUpTo": serializers.CharField(allow_null=True), "unread": serializers.IntegerField()},
            )
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = self.ReadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        marker = notifications_mark_read(user_id=request.user.pk, up_to=data.validated_data.get("upTo"))
        return Response({"readUpTo": marker, "unread": notification_list(user_id=request.user.pk, count=1)["unread"]})


def notification_stream(request: HttpRequest) -> HttpResponseBase:
    """GET /api/notifications/stream: the caller's live notifications (text/event-stream).

    A plain Django view, not DRF: DRF negotiates a renderer before the view runs and
    has none for text/event-stream. The caller is its session or, as everywhere in the
    API, `Authorization: Bearer <access token>` (judged alone, with the same answers).
    Resume with the Last-Event-ID header (browsers send it when they reconnect) or
    ?lastEventId= (a fresh EventSource, or polling clients switching back to the stream).
    """
    if request.method != "GET":
        response = error_response(request, 405, "Method not allowed")
        response["Allow"] = "GET"
        return response
    if tokens.bearer_token(request) == "":
        return _unauthenticated(request, "Missing token")
    try:
        credential = stream_credential(request)
    except tokens.TokenError as exc:
        return error_response(request, 403, str(as_api_exception(exc).detail))
    if credential is None:
        return _unauthenticated(request, "Not logged in")
    requested = request.GET.get("userId")
    if requested is not None and requested != str(credential.user_id):
        return error_response(request, 403, "You can only open your own notification stream")
    last_event_id = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId") or None
    if last_event_id is not None and stream_id_or_none(last_event_id) is None:
        return error_response(request, 400, "Last-Event-ID must be a notification id")
    return sse.stream_response(request, credential=credential, last_event_id=last_event_id)


def _unauthenticated(request: HttpRequest, message: str) -> HttpResponse:
    response = error_response(request, 401, message)
    response["WWW-Authenticate"] = JWTAuthentication().authenticate_header(Request(request))
    return response
