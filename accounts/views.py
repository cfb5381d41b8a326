"""Site pages of the accounts app: thin, the work is in services and selectors."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import LoginForm, SignupForm
from accounts.models import User
from accounts.services import AlreadyFollowing, NotFollowing, follow_create, follow_delete, user_create
from feeds.selectors import FEED_COUNT_DEFAULT, stream_id_parse, timeline_page
from posts.selectors import post_list_recent


def home(request: HttpRequest) -> HttpResponse:
    """The home timeline (posts by the people you follow) above everyone's recent posts."""
    timeline = None
    if request.user.is_authenticated:
        timeline = timeline_page(
            user_id=request.user.pk, count=FEED_COUNT_DEFAULT, before=_cursor(request.GET.get("before"))
        )
    return render(request, "home.html", {"posts": post_list_recent(limit=20), "timeline": timeline})


def _cursor(value: str | None) -> str | None:
    try:
        ms, seq = stream_id_parse(value or "")
    except ValueError:
        return None  # none, or a mangled link: the newest page
    return f"{ms}-{seq}"


@login_required
@require_POST
def follow_toggle(request: HttpRequest, user_id: int) -> HttpResponse:
    followee = User.objects.filter(pk=user_id, is_active=True).first()
    if followee is None:
        raise Http404("No such person")
    try:
        if request.POST.get("action") == "unfollow":
            follow_delete(follower=request.user, followee=followee)
            messages.info(request, f"You no longer follow @{followee.username}.")
        else:
            follow_create(follower=request.user, followee=followee)
            messages.success(request, f"You now follow @{followee.username}.")
    except (AlreadyFollowing, NotFollowing):
        pass  # a double click: the state the person wanted is the state it is in
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    return redirect("profile", user_id=user_id)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
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


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.info(request, "You have been logged out.")
    return redirect("home")
