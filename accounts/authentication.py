"""DRF authentication by `Authorization: Bearer <access token>` (accounts.tokens).

401 {"error": "Missing token"} where a token is required and none came; 403 "Invalid
token" or "Token revoked" (accounts.revocation) for a bad one; 503 when Redis does not
answer. A Bearer request is judged by its token alone, never by its session cookie;
without one, session authentication decides, and with neither an endpoint that needs a
user answers 401 {"error": "Not logged in"} with `WWW-Authenticate: Bearer` (core.api).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts import sessions, tokens
from accounts.models import User
from core.ratelimit.guard import Credential

if TYPE_CHECKING:
    from drf_spectacular.openapi import AutoSchema


class TokenMissing(exceptions.NotAuthenticated):
    """401: this endpoint needs a token and the request has none."""

    default_detail = "Missing token"
    default_code = "token_missing"


class TokenInvalid(exceptions.APIException):
    """403: not a token Kestrel issued and still honours (tokens.InvalidToken)."""

    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "Invalid token"
    default_code = "token_invalid"


class TokenRevoked(exceptions.APIException):
    """403: a genuine token that was revoked (tokens.RevokedToken)."""

    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "Token revoked"
    default_code = "token_revoked"


def rate_limit_credential(request: HttpRequest) -> Credential | None:
    """settings.KESTREL_RATE_LIMIT_CREDENTIAL: who the request is, for the rate limiter,
    as authentication will judge it: by its bearer token if it sends one, else by a
    session this process knows (accounts.sessions). Either way its check rides in the
    limiter's script."""
    if tokens.bearer_token(request) is not None:
        return tokens.bearer_rate_limit_credential(request)
    return sessions.session_rate_limit_credential(request)


def as_api_exception(exc: tokens.TokenError) -> exceptions.APIException:
    """The API's answer to a refused token: 403 "Token revoked" or 403 "Invalid token"."""
    return TokenRevoked() if isinstance(exc, tokens.RevokedToken) else TokenInvalid()


class JWTAuthentication(BaseAuthentication):
    """`request.user` is the token's user and `request.auth` its tokens.Claims.

    No CSRF check, unlike SessionAuthentication: a browser never adds an Authorization
    header to a cross-site request by itself, so a bearer request cannot be forged.
    """

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, tokens.Claims] | None:
        http_request = request._request  # the rate limiter's verdict and decoded claims live there
        token = tokens.bearer_token(http_request)
        if token is None:
            return None  # no bearer token: session authentication decides
        if not token:
            raise TokenMissing()
        try:
            # Fails closed: a Redis that cannot answer raises here (503 from core.api).
            return tokens.token_authenticate(http_request)
        except tokens.TokenError as exc:
            raise as_api_exception(exc) from None

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer an unauthenticated request with 401 and this challenge.
        return f'{self.keyword} realm="api"'


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    """The bearer scheme in the OpenAPI schema (drf-spectacular finds it by subclassing)."""

    target_class = "accounts.authentication.JWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix=JWTAuthentication.keyword,
            bearer_format="JWT",
        )
