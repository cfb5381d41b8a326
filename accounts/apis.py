"""Session login API, as in the reference article's part 3."""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from accounts.selectors import user_me, user_profile, user_to_profile
from accounts.services import user_create, user_update_profile

_MeSerializer = inline_serializer(
    "Me",
    {
        "userId": serializers.IntegerField(),
        "email": serializers.EmailField(),
        "username": serializers.CharField(),
        "isStaff": serializers.BooleanField(),
    },
)
_MessageSerializer = inline_serializer("Message", {"message": serializers.CharField()})


class RegisterApi(APIView):
    permission_classes = [AllowAny]

    class RegisterInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=User._meta.get_field("email").max_length)
        username = serializers.CharField(max_length=User._meta.get_field("username").max_length)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(request=RegisterInputSerializer, responses={201: _MeSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.RegisterInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            user = user_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        login(request, user, backend="accounts.backends.EmailOrUsernameBackend")
        return Response(user_me(user=user), status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    permission_classes = [AllowAny]

    class LoginInputSerializer(serializers.Serializer):
        email = serializers.CharField(max_length=254)
        password = serializers.CharField(max_length=128, trim_whitespace=False)

    @extend_schema(request=LoginInputSerializer, responses={200: _MeSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.LoginInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(request, **serializer.validated_data)
        if user is None:
            return Response({"error": "Invalid credentials"}, status=status.HTTP_401_UNAUTHORIZED)
        login(request, user)
        return Response({"message": "Logged in", **user_me(user=user)})


class MeApi(APIView):
    @extend_schema(responses={200: _MeSerializer})
    def get(self, request: Request) -> Response:
        return Response(user_me(user=request.user))


class LogoutApi(APIView):
    # Logging out twice is not an error; the session cookie, if any, is gone either way.
    permission_classes = [AllowAny]

    @extend_schema(request=None, responses={200: _MessageSerializer})
    def post(self, request: Request) -> Response:
        logout(request)
        return Response({"message": "Logged out"})


class ProfileInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=User._meta.get_field("name").max_length, allow_blank=True)
    bio = serializers.CharField(max_length=User._meta.get_field("bio").max_length, allow_blank=True)


class UserDetailApi(APIView):
    """The reference article's cache-aside example: GET /api/users/{id}, PATCH invalidates."""

    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(responses={200: dict})
    def get(self, request: Request, user_id: int) -> Response:
        profile = user_profile(user_id=user_id)
        if profile is None:
            raise NotFound("User not found")
        return Response(profile)

    @extend_schema(request=ProfileInputSerializer(partial=True), responses={200: dict})
    def patch(self, request: Request, user_id: int) -> Response:
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
        return Response(user_to_profile(user))
