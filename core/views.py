"""Generic site view helpers: POST-only doors that send a GET back to their button,
the staff-only guard, the 403 handler, the favicon, and the in-place answers of the
site's htmx buttons and "Load older" links.

No dead ends: a link followed, a reload or a typed address lands on a page, never a
blank 405; a person who is not staff sees a page saying so, not a login form.

Progressive enhancement: every button is a form and every "Load older" a link that
works without JavaScript; with it, htmx sends the same request with an `HX-Request`
header and swaps in the part of the page the view renders for it (in_place).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render, resolve_url
from django.templatetags.static import static
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.defaults import permission_denied
from django_htmx.http import HttpResponseClientRedirect

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


def login_required_in_place(view: View) -> View:
    """login_required, for a view htmx may call: a logged-out htmx request is told to open
    the login page (`HX-Redirect`), coming back to the page it was on, instead of having
    the login form swapped into a button."""
    guarded = login_required(view)

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if in_place(request) and not request.user.is_authenticated:
            back = request.POST.get("next", "")
            return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': back or '/'})}")
        return guarded(request, *args, **kwargs)

    return cast(View, inner)


def in_place(request: HttpRequest) -> bool:
    """Whether htmx sent the request (`HX-Request: true`): answer with a part of the page.

    Read from META, not a middleware: the API's requests never pay for it.
    """
    return request.META.get("HTTP_HX_REQUEST") == "true"


def render_list(
    request: HttpRequest, template: str, items_template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """A page with a list: the whole page, or for "Load older" through htmx only the next
    items and their own "Load older" (`items_template`, which the page includes too).

    `Vary: HX-Request`: a cache must not answer a plain GET with the fragment.
    """
    if in_place(request):
        response = render(request, items_template, {**context, "fragment": True}, status=status)
    else:
        response = render(request, template, context, status=status)
    patch_vary_headers(response, ("HX-Request",))
    return response


def back_to(request: HttpRequest, fallback: str) -> HttpResponse:
    """After a button's form without JavaScript: back to the page it was on (its `next`,
    if it is a path of this site), else to `fallback`."""
    target = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return redirect(target if safe and target.startswith("/") else fallback)
