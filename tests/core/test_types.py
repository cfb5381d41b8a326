"""core.types: a view behind a login guard declares a request whose user is a User.

Checked by mypy (`mypy --strict core/types.py tests/core/test_types.py`): assert_type
fails the check if `request.user` is anything but accounts.User, such as the stubs'
`User | AnonymousUser`. At run time the views get Django's and DRF's own requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_type, cast

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.test import RequestFactory
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from accounts.models import User
from core.types import AuthenticatedHttpRequest, AuthenticatedRequest


class WhoAmIApi(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: AuthenticatedRequest) -> Response:
        assert_type(request.user, User)
        return Response({"username": request.user.username})


@login_required
def who_am_i(request: AuthenticatedHttpRequest) -> HttpResponse:
    assert_type(request.user, User)
    return HttpResponse(request.user.username)


def test_an_api_view_reads_its_user_as_a_user(make_user: Callable[..., User]) -> None:
    user = make_user()
    request = APIRequestFactory().get("/whoami")
    force_authenticate(request, user=user)
    response = WhoAmIApi.as_view()(request)
    assert isinstance(response, Response)
    assert response.data == {"username": user.username}


def test_a_site_view_reads_its_user_as_a_user(make_user: Callable[..., User]) -> None:
    user = make_user()
    request = RequestFactory().get("/whoami")
    request.user = user
    # Django's URL resolver passes the request untyped; here the test stands in for it.
    response = who_am_i(cast(AuthenticatedHttpRequest, request))
    assert response.content == user.username.encode()
