"""Kestrel's session and authentication middleware: Django's, with Redis outages and
anonymous requests handled.

The session store is the state role: a session that cannot be saved is a 503, never a
silent log-out. A request without a session cookie reads no session at all.
"""

from __future__ import annotations

import logging
from typing import cast

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject

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


class AuthenticationMiddleware(DjangoAuthenticationMiddleware):
    """Django's, minus the work of finding no one on most requests.

    Without a session cookie there is no session to read, so `request.user` is
    AnonymousUser without Django's session load and user-model lookup (a measurable
    share of an anonymous API read). Evaluating it still counts as reading the session,
    so the response varies on Cookie exactly as with Django's.
    """

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            # Lazy, as Django's own middleware sets it: it becomes an AnonymousUser when used.
            request.user = cast(AnonymousUser, SimpleLazyObject(lambda: _anonymous(request)))


def _anonymous(request: HttpRequest) -> AnonymousUser:
    request.session.accessed = True
    return AnonymousUser()
