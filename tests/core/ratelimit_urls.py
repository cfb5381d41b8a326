"""A small URLconf for the rate limiter's HTTP tests: stand-ins for the API's paths.

The limiter cares about paths, methods, the user and the body, not about what the
views do; stand-ins keep these tests independent of the real views (one test uses the
real log-in view to show its body still reaches DRF).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

calls: list[str] = []  # paths that reached a view, for tests that check a view did not run


@csrf_exempt
def stand_in(request: HttpRequest) -> JsonResponse:
    calls.append(request.path)
    return JsonResponse({"ok": True})


urlpatterns = [
    path("api/ping", stand_in),
    path("api/login", stand_in),
    path("api/token", stand_in),
    path("api/register", stand_in),
    path("elsewhere", stand_in),
]
