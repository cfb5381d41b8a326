"""DRF plumbing shared by every app's apis.py: the error format of DESIGN.md.

Every API error is `{"error": "<message>"}`, validation errors add `"details"`
(field -> list of messages), and the status codes are the reference article's.
"""

from __future__ import annotations

import logging
import sys

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.http import RETRY_AFTER_UNAVAILABLE, service_unavailable, unavailable_service

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    service = unavailable_service(exc)
    if service is not None:
        logger.error("%s unavailable in %s: %s", service, context.get("view"), exc)
        return Response(
            {"error": f"{service} is unavailable; please try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django's 500 handling (handler500 below) takes over

    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "Invalid input", "details": _as_details(exc.detail)}
    elif isinstance(exc, exceptions.NotAuthenticated):
        # DRF turns this into 403 when no authenticator sends WWW-Authenticate;
        # the article (and HTTP) say 401. DRF's own "credentials were not provided"
        # reads as the article's "Not logged in"; a subclass keeps its message
        # (accounts.authentication.TokenMissing: "Missing token").
        response.status_code = status.HTTP_401_UNAUTHORIZED
        plain = type(exc) is exceptions.NotAuthenticated
        response.data = {"error": "Not logged in" if plain else str(exc.detail)}
    elif isinstance(exc, exceptions.ParseError):
        response.data = {"error": f"Malformed request body: {exc.detail}"}
    else:
        response.data = {"error": str(exc.detail)}
    return response


def _as_details(detail) -> dict:
    if isinstance(detail, dict):
        return {field: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])] for field, msgs in detail.items()}
    return {"non_field_errors": [str(m) for m in (detail if isinstance(detail, list) else [detail])]}


def json_handler404(request: HttpRequest, exception: Exception | None = None):
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Not found"}, status=404)
    return page_not_found(request, exception)


def json_handler500(request: HttpRequest):
    """Django's last resort for an exception nothing else handled, in a view or a middleware.

    An outage raised where no view's handler sees it (the rate limiter reading the
    user's row while the database is down) is still an outage: 503 with Retry-After,
    not a 500. Django calls this inside its `except`, so the exception is at hand.
    """
    from django.views.defaults import server_error

    exc = sys.exc_info()[1]
    service = unavailable_service(exc) if exc is not None else None
    if service is not None:
        return service_unavailable(request, service)
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Internal server error"}, status=500)
    return server_error(request)
