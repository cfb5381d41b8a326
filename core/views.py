"""Generic site view helpers: POST-only doors that send a GET back to their button,
the staff-only guard, the 403 handler and the favicon.

No dead ends: a link followed, a reload or a typed address lands on a page, never a
blank 405; a person who is not staff sees a page saying so, not a login form.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import reverse
from django.views.defaults import permission_denied

View = TypeVar("View", bound=Callable[..., HttpResponse])


def post_only(back: str | Callable[[HttpRequest], str]) -> Callable[[View], View]:
    """require_POST, except that a GET or HEAD is redirected (302) to the page with the button.

    `back` is a URL name, reversed with the view's own URL kwargs (post_id, user_id),
    or a function of the request giving the URL. Other methods still get 405.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method in ("GET", "HEAD"):
                return redirect(back(request) if callable(back) else reverse(back, kwargs=kwargs))
            if request.method != "POST":
                return HttpResponseNotAllowed(["POST"])
            return view(request, *args, **kwargs)

        return cast(View, inner)

    return decorator


def staff_required(view: View) -> View:
    """Staff only: an anonymous visitor is sent to log in (LOGIN_URL), anyone else logged
    in who is not active staff gets the 403 page (PermissionDenied, handler403)."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (user.is_active and user.is_staff):
            raise PermissionDenied("This page is for staff")
        return view(request, *args, **kwargs)

    return cast(View, inner)


def json_handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A PermissionDenied no view handled: the API's JSON 403, else the site's 403.html."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Forbidden"}, status=403)
    return permission_denied(request, exception or PermissionDenied())


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on their own: to the SVG among the static files."""
    return redirect(static("favicon.svg"))
