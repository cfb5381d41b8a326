"""Turn a Redis outage inside a view into a clear 503 instead of a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from core.http import service_unavailable
from core.redis import is_unavailable

logger = logging.getLogger(__name__)


class RedisUnavailableMiddleware:
    """Answers 503 when a view (or its template) finds Redis unreachable.

    Only "Redis did not answer" errors are caught; anything else stays a bug and
    reaches Django's normal 500 handling. Session saves happen after the view and
    are covered by accounts.middleware.SessionMiddleware.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_unavailable(exception):
            return None
        logger.error("Redis unavailable during %s %s: %s", request.method, request.path, exception)
        return service_unavailable(request, "Redis")
