"""Site pages of the accounts app (sign-up, log-in, log-out): thin, the work is in services.

The home page is posts' (posts.views.home); the follow button is feeds' (feeds.views.follow_toggle).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from accounts.forms import LoginForm, SignupForm
from accounts.services import user_create
from core.views import post_only


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """/signup: the form; a valid one creates the account (user_create), logs in, goes home.

    A refused one shows the form again (400) with every error beside its field at once
    and the email and username as typed; nothing is written then.
    """
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = user_create(**form.cleaned_data)
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                for error in errors:
                    form.add_error(field if field in form.fields else None, error)
        else:
            login(request, user, backend="accounts.backends.EmailBackend")
            messages.success(request, f"Welcome to Kestrel, {user.username}!")
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """/login: log in by email; then to `next` if it is on this site, else home."""
    form = LoginForm(request.POST or None)
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if request.method == "POST" and form.is_valid():
        user = authenticate(request, **form.cleaned_data)
        if user is not None:
            login(request, user)
            if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure()):
                next_url = ""
            return redirect(next_url or "home")
        messages.error(request, "Invalid email or password.")
    status = 400 if request.method == "POST" else 200
    return render(request, "accounts/login.html", {"form": form, "next": next_url}, status=status)


@post_only("home")
def logout_view(request: HttpRequest) -> HttpResponse:
    """/logout (POST; a GET is sent home): end the session and go home."""
    logout(request)
    messages.info(request, "You have been logged out.")
    return redirect("home")
