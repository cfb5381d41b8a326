"""Request types for views that only a logged-in user reaches (for typing only).

    def post(self, request: AuthenticatedRequest, post_id: int) -> Response:
        services.post_like(post=post, user=request.user)  # a User, not User | AnonymousUser

The annotation is a promise the view's guard keeps (IsAuthenticated, @login_required);
a view anyone may call takes Request or HttpRequest and checks is_authenticated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from rest_framework.request import Request

if TYPE_CHECKING:
    # The stubs' name for settings.AUTH_USER_MODEL: django-stubs' plugin resolves it to
    # the project's User (accounts.User) without core importing a product app.
    from django.contrib.auth.models import _User


class AuthenticatedHttpRequest(HttpRequest):
    """A Django HttpRequest whose user is logged in (views behind @login_required)."""

    user: _User


class AuthenticatedRequest(Request):
    """A DRF Request whose user is logged in (views behind IsAuthenticated)."""

    user: _User
