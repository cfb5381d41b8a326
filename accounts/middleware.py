from __future__ import annotations

import logging

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse

from core.http import service_unavailable
from core.redis import is_unavailable

logger = logging.getLogger(__name__)


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware, answering 503 when the session store is down.

    Saving the session happens after the view, outside process_exception's reach,
    so the failure is handled here. Losing a session write silently would log the
    person out or drop what they just did, so this is not failed open.
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        try:
            return super().process_response(request, response)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.error("Session store unavailable saving %s %s: %s", request.method, request.path, exc)
            return service_unavailable(request, "The session store (Redis)")
