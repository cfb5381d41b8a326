"""Responses and request facts shared by the site and the API."""

from __future__ import annotations

from collections.abc import Mapping

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

from core.redis import is_unavailable

# Seconds a client should wait before retrying while a backing service is down.
RETRY_AFTER_UNAVAILABLE = 5


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def error_response(
    request: HttpRequest,
    status: int,
    message: str,
    *,
    template: str = "error.html",
    context: Mapping[str, object] | None = None,
) -> HttpResponse:
    """`{"error": message}` for API clients, the error page (`template`) for browsers."""
    if wants_json(request):
        return JsonResponse({"error": message}, status=status)
    # No request: context processors would read the session, which may be what is down.
    html = render_to_string(template, {"status": status, "message": message, **(context or {})}, request=None)
    return HttpResponse(html, status=status)


def unavailable_service(exc: BaseException) -> str | None:
    """The backing service `exc` says is down ("Redis", "The database"), or None: a bug.

    The database's OperationalError covers a refused or dropped connection, a server
    shutting down or starting up, and the transient refusals (deadlock, serialization
    failure, SQLite's "database is locked"): all worth retrying shortly. InterfaceError
    is a connection that died under Django.
    """
    if is_unavailable(exc):
        return "Redis"
    if isinstance(exc, OperationalError | InterfaceError):
        return "The database"
    return None


def service_unavailable(request: HttpRequest, what: str) -> HttpResponse:
    response = error_response(request, 503, f"{what} is unavailable; please try again shortly.")
    response["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return response
