"""Responses shared by the site and the API when something outside Kestrel fails."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

# Seconds a client should wait before retrying while a backing service is down.
RETRY_AFTER_UNAVAILABLE = 5


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def error_response(request: HttpRequest, status: int, message: str) -> HttpResponse:
    """`{"error": message}` for API clients, the error page for browsers."""
    if wants_json(request):
        return JsonResponse({"error": message}, status=status)
    html = render_to_string("error.html", {"status": status, "message": message}, request=None)
    return HttpResponse(html, status=status)


def service_unavailable(request: HttpRequest, what: str) -> HttpResponse:
    response = error_response(request, 503, f"{what} is unavailable; please try again shortly.")
    response["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return response
