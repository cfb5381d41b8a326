"""The accounts API: sign-up, session and token log-in and log-out, passwords, profiles, follow lists.

Thin: the work is in accounts.services, selectors and tokens. Token and session state
is on the state role and fails closed (503). Following and unfollowing are feeds'
(feeds.apis.UserFollowApi).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth import authenticate, login, logout, update_session_auth_hash
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.fields import empty
from rest_framework.permissions import AllowAny, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import tokens
from accounts.authentication import JWTAuthentication, TokenMissing, as_api_exception
from accounts.models import BIO_MAX_LENGTH, EMAIL_MAX_LENGTH, NAME_MAX_LENGTH, USERNAME_MAX_LENGTH, User
from accounts.selectors import (
    follow_counts,
    follower_list,
    following_list,
    user_me,
    user_profile,
    user_to_profile,
)
from accounts.services import (
    ProfileBeingUpdated,
    user_change_password,
    user_create,
    user_signup_errors,
    user_tokens_revoke_all,
    user_update_profile,
)
from accounts.validators import validate_username
from core.api import BodySerializer, QuerySerializer
from core.schema import api_error
from core.types import AuthenticatedRequest

# The answers' shapes, for the schema only: the views return the selectors' plain dicts.


class MeSerializer(serializers.Serializer):
    userId = serializers.IntegerField()
    email = serializers.EmailField()
    username = serializers.CharField()
    isStaff = serializers.BooleanField()


class LoggedInSerializer(MeSerializer):
    message = serializers.CharField()


class ProfileSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    bio = serializers.CharField(allow_blank=True)
    dateJoined = serializers.DateTimeField()


_MessageSerializer = inline_serializer("Message", {"message": serializers.CharField()})


class RegisterApi(APIView):
    """POST /api/register {"email", "username", "password"}: 201, logged in with a session."""

    permission_classes = [AllowAny]

    class RegisterInputSerializer(BodySerializer):
        email = serializers.EmailField(max_length=EMAIL_MAX_LENGTH)
        username = serializers.CharField(max_length=USERNAME_MAX_LENGTH, validators=[validate_username])
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(
        request=RegisterInputSerializer,
        responses={201: MeSerializer, 400: api_error("Invalid or taken values, or a weak password")},
    )
    def post(self, request: Request) -> Response:
        serializer = self.RegisterInputSerializer(data=request.data)
        if not serializer.is_valid():
            raise serializers.ValidationError(_register_errors(serializer))
        try:
            user = user_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        login(request, user, backend="accounts.backends.EmailBackend")
        return Response(user_me(user=user), status=status.HTTP_201_CREATED)


def _register_errors(serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    """Every problem of a refused registration at once, as the site's sign-up form reports them.

    A field the serializer refuses keeps the sign-up's own checks (a taken email or
    username, a weak password) from running, and BodySerializer stops at a value of the
    wrong JSON type before the other fields' formats. So each field not refused yet is
    checked on its own, and user_signup_errors checks every field that passed.
    """
    refused: dict[str, Any] = dict(serializer.errors)
    data = serializer.initial_data
    if not isinstance(data, Mapping):
        return refused
    values: dict[str, Any] = dict.fromkeys(serializer.fields.keys())
    for name, field in serializer.fields.items():
        if name in refused:
            continue
        try:
            values[name] = field.run_validation(data.get(name, empty))
        except serializers.ValidationError as exc:
            refused[name] = exc.detail
    return {**user_signup_errors(**values), **refused}


class LoginApi(APIView):
    """POST /api/login {"email", "password"}: a session; 401 for wrong credentials."""

    permission_classes = [AllowAny]

    class LoginInputSerializer(BodySerializer):
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(
        request=LoginInputSerializer,
        responses={200: LoggedInSerializer, 401: api_error("Invalid credentials")},
    )
    def post(self, request: Request) -> Response:
        serializer = self.LoginInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            return Response({"error": "Invalid credentials"}, status=status.HTTP_401_UNAUTHORIZED)
        login(request, user)
        return Response({"message": "Logged in", **user_me(user=user)})


class MeApi(APIView):
    """GET /api/me: who the session or bearer token is (user_me)."""

    @extend_schema(responses={200: MeSerializer})
    def get(self, request: AuthenticatedRequest) -> Response:
        return Response(user_me(user=request.user))


_TokenPairSerializer = inline_serializer(
    "TokenPair",
    {
        "access": serializers.CharField(),
        "refresh": serializers.CharField(),
        "tokenType": serializers.CharField(),
        "expiresIn": serializers.IntegerField(),
        "refreshExpiresIn": serializers.IntegerField(),
    },
)
# Far longer than any token Kestrel issues (~350 characters); refuses megabyte bodies early.
_TOKEN_MAX_LENGTH = 2048


def _token_response(body: dict) -> Response:
    # RFC 6749 5.1: an answer carrying tokens must never be stored by a cache on the way.
    return Response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _bearer_claims(request: Request) -> tokens.Claims | None:
    """The access token's claims when the request was authenticated by one."""
    return request.auth if isinstance(request.auth, tokens.Claims) else None


class _BodyTokenApi(APIView):
    """An endpoint whose credentials are in the body (a password, a refresh token): a
    stale bearer header or session cookie beside them must not get in the way."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # A 401 still names the scheme the tokens it deals in are used with.
        return JWTAuthentication().authenticate_header(request)


class TokenApi(_BodyTokenApi):
    """POST /api/token {"email", "password"}: an access and a refresh token, never stored on the way."""

    @extend_schema(
        request=LoginApi.LoginInputSerializer,
        responses={200: _TokenPairSerializer, 401: api_error("Invalid credentials")},
    )
    def post(self, request: Request) -> Response:
        serializer = LoginApi.LoginInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            return Response({"error": "Invalid credentials"}, status=status.HTTP_401_UNAUTHORIZED)
        return _token_response(tokens.token_pair_issue(user=user).as_dict())


class RefreshInputSerializer(BodySerializer):
    refresh = serializers.CharField(max_length=_TOKEN_MAX_LENGTH, required=False, allow_blank=True)


class TokenRefreshApi(_BodyTokenApi):
    """POST /api/token/refresh {"refresh"}: the next pair; the refresh token is spent (single use)."""

    @extend_schema(
        request=RefreshInputSerializer,
        responses={
            200: _TokenPairSerializer,
            401: api_error("Missing token"),
            403: api_error("Invalid token, or token revoked"),
        },
    )
    def post(self, request: Request) -> Response:
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        refresh = data.validated_data.get("refresh")
        if not refresh:
            raise TokenMissing()
        try:
            pair = tokens.token_refresh(refresh=refresh)
        except tokens.TokenError as exc:
            raise as_api_exception(exc) from None
        return _token_response(pair.as_dict())


class LogoutApi(APIView):
    """With a bearer token: revokes it, its family (the refresh token of the same log-in)
    and the refresh token in the body, if any. Without one: ends the session, and revokes
    a refresh token in the body (a client whose access token already expired)."""

    # Logging out twice is not an error; the session cookie, if any, is gone either way.
    permission_classes = [AllowAny]

    @extend_schema(request=RefreshInputSerializer, responses={200: _MessageSerializer})
    def post(self, request: Request) -> Response:
        data = RefreshInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        bearer = _bearer_claims(request)
        revoked = [bearer] if bearer is not None else []
        if refresh := data.validated_data.get("refresh"):
            # Decoded before anything is revoked: a refused body revokes nothing.
            try:
                claims = tokens.token_decode(refresh, type=tokens.REFRESH)
            except tokens.TokenError as exc:
                raise as_api_exception(exc) from None
            if bearer is not None and claims.user_id != bearer.user_id:
                raise as_api_exception(tokens.InvalidToken("another user's refresh token"))
            revoked.append(claims)
        # State role, fails closed: if Redis does not answer, the client gets a 503 and
        # knows its tokens still stand, rather than a "Logged out" that did not happen.
        tokens.tokens_revoke(claims=revoked)
        if bearer is None:
            logout(request)
        return Response({"message": "Logged out"})


class LogoutAllApi(APIView):
    """POST /api/logout-all: every token and every session of the caller ends, in O(1)."""

    @extend_schema(request=None, responses={200: _MessageSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        user_tokens_revoke_all(user=request.user)
        if _bearer_claims(request) is None:
            logout(request)  # this session's hash is stale now anyway; drop its key at once
        return Response({"message": "Logged out everywhere"})


# A token caller also gets its next token pair (its own tokens were revoked).
_PasswordChangedSerializer = inline_serializer(
    "PasswordChanged",
    {
        "message": serializers.CharField(),
        "access": serializers.CharField(required=False),
        "refresh": serializers.CharField(required=False),
        "tokenType": serializers.CharField(required=False),
        "expiresIn": serializers.IntegerField(required=False),
        "refreshExpiresIn": serializers.IntegerField(required=False),
    },
)


class PasswordChangeApi(APIView):
    """POST /api/password {"old", "new"}: logs out everywhere else. A session caller keeps
    its session; a token caller gets a new pair in the answer (its own tokens are revoked)."""

    class PasswordInputSerializer(BodySerializer):
        old = serializers.CharField(max_length=128, trim_whitespace=False)
        new = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(request=PasswordInputSerializer, responses={200: _PasswordChangedSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        data = self.PasswordInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request.user
        try:
            user_change_password(
                user=user, old_password=data.validated_data["old"], new_password=data.validated_data["new"]
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        body = {"message": "Password changed"}
        if _bearer_claims(request) is None:
            update_session_auth_hash(request, user)
            return Response(body)
        return _token_response({**body, **tokens.token_pair_issue(user=user).as_dict()})


class Conflict(APIException):
    """409: another edit of the same resource holds its lock."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict"


class ProfileInputSerializer(BodySerializer):
    name = serializers.CharField(max_length=NAME_MAX_LENGTH, allow_blank=True)
    bio = serializers.CharField(max_length=BIO_MAX_LENGTH, allow_blank=True)


class UserDetailApi(APIView):
    """GET /api/users/{id}: a public profile (cache-aside); PATCH: edit one's own, under the
    profile lock (409 while another edit runs); the cached copy is dropped after commit."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(responses={200: ProfileSerializer})
    def get(self, request: Request, user_id: int) -> Response:
        profile = user_profile(user_id=user_id)
        if profile is None:
            raise NotFound("User not found")
        return Response(profile)

    @extend_schema(
        request=ProfileInputSerializer(partial=True),
        responses={200: ProfileSerializer, 409: api_error("Resource is being updated")},
    )
    def patch(self, request: AuthenticatedRequest, user_id: int) -> Response:
        if request.user.pk != user_id:
            if not User.objects.filter(pk=user_id).exists():
                raise NotFound("User not found")
            raise PermissionDenied("You can only edit your own profile")
        data = ProfileInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            user = user_update_profile(user=request.user, **data.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        except ProfileBeingUpdated:
            raise Conflict("Resource is being updated") from None
        return Response(user_to_profile(user))


# --- Who follows whom (read only) -------------------------------------------------------------


class FollowPageQuerySerializer(QuerySerializer):
    count = serializers.IntegerField(min_value=1, max_value=100, default=50, help_text="1 to 100, default 50")
    before = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, required=False, help_text="the `next` of the previous page"
    )


_FOLLOW_PAGE_PARAMETERS = [FollowPageQuerySerializer]
_FollowPageSerializer = inline_serializer(
    "FollowPage",
    {
        "userId": serializers.IntegerField(),
        "total": serializers.IntegerField(),
        "users": inline_serializer(
            "FollowEntry",
            {
                "id": serializers.IntegerField(),
                "username": serializers.CharField(),
                "name": serializers.CharField(allow_blank=True),
                "followedAt": serializers.DateTimeField(),
            },
            many=True,
        ),
        "next": serializers.IntegerField(allow_null=True, help_text="the `before` of the next page"),
    },
)


def _follow_page(request: Request, user_id: int, *, which: str) -> Response:
    query = FollowPageQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    if user_profile(user_id=user_id) is None:
        raise NotFound("User not found")
    lister = follower_list if which == "followers" else following_list
    page = lister(user_id=user_id, **query.validated_data)
    return Response({"userId": user_id, "total": follow_counts(user_id=user_id)[which], **page})


class UserFollowersApi(APIView):
    """The people following the user, newest first; `total` comes from the Redis mirror."""

    permission_classes = [AllowAny]

    @extend_schema(parameters=_FOLLOW_PAGE_PARAMETERS, responses={200: _FollowPageSerializer})
    def get(self, request: Request, user_id: int) -> Response:
        return _follow_page(request, user_id, which="followers")


class UserFollowingApi(APIView):
    """The people the user follows, newest first."""

    permission_classes = [AllowAny]

    @extend_schema(parameters=_FOLLOW_PAGE_PARAMETERS, responses={200: _FollowPageSerializer})
    def get(self, request: Request, user_id: int) -> Response:
        return _follow_page(request, user_id, which="following")
