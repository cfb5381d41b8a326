"""Site pages of the feeds app: follow buttons, and the followers and following lists of a
person (the notifications page is feeds.notification_views). Thin: the work is in
feeds.services and accounts.selectors."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from accounts.models import User
from accounts.selectors import follow_counts, follower_list, following_list, follows_among, user_profile
from core.types import AuthenticatedHttpRequest
from core.views import back_to, in_place, login_required_in_place, post_only, render_list
from feeds.services import AlreadyFollowing, NotFollowing, follow_create, follow_delete

PEOPLE_PAGE = 20


@post_only("profile")
@login_required_in_place
def follow_toggle(request: AuthenticatedHttpRequest, user_id: int) -> HttpResponse:
    """POST from a follow button: follow, or unfollow with action=unfollow.

    From htmx, the button as it is now (feeds/_follow.html, with the profile's follower
    count when asked); without JavaScript, back to the page the button was on (`next`)
    with a message, else the profile. A double click is not an error: the state is the
    one wanted. Following oneself is an error (a 400 beside the button, or a message).
    """
    followee = User.objects.filter(pk=user_id, is_active=True).first()
    if followee is None:
        raise Http404("No such person")
    unfollow = request.POST.get("action") == "unfollow"
    error = None
    try:
        if unfollow:
            follow_delete(follower=request.user, followee=followee)
        else:
            follow_create(follower=request.user, followee=followee)
    except (AlreadyFollowing, NotFollowing):
        pass  # a double click: the state the person wanted is the state it is in
    except ValidationError as exc:
        error = exc.messages[0]
    if in_place(request):
        show_count = bool(request.POST.get("show_count"))
        context = {
            "person": {"id": followee.pk, "username": followee.username},
            "following": not unfollow if error is None else unfollow,
            "back": request.POST.get("next", ""),
            "show_count": show_count,
            "oob_count": follow_counts(user_id=followee.pk)["followers"] if show_count else None,
            "error": error,
        }
        return render(request, "feeds/_follow.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    elif unfollow:
        messages.info(request, f"You no longer follow @{followee.username}.")
    else:
        messages.success(request, f"You now follow @{followee.username}.")
    return back_to(request, reverse("profile", args=[user_id]))


def followers(request: HttpRequest, user_id: int) -> HttpResponse:
    """/users/<id>/followers: the people following someone, newest first, with "Load older"."""
    return _people(request, user_id, which="followers")


def following(request: HttpRequest, user_id: int) -> HttpResponse:
    """/users/<id>/following: the people someone follows, newest first, with "Load older"."""
    return _people(request, user_id, which="following")


def _people(request: HttpRequest, user_id: int, *, which: str) -> HttpResponse:
    person = user_profile(user_id=user_id)
    if person is None:
        raise Http404("No such person")
    try:
        before = int(request.GET["before"])
    except (KeyError, ValueError):
        before = None  # none, or a mangled link: the newest page
    lister = follower_list if which == "followers" else following_list
    page = lister(user_id=user_id, count=PEOPLE_PAGE, before=before if before and before > 0 else None)
    # The reader's own follow of each person, for their buttons: one SMISMEMBER.
    followed = (
        follows_among(follower_id=request.user.pk, user_ids=[someone["id"] for someone in page["users"]])
        if request.user.is_authenticated
        else set()
    )
    for someone in page["users"]:
        someone["followed"] = someone["id"] in followed
    heading = f"Followers of @{person['username']}" if which == "followers" else f"@{person['username']} follows"
    context = {
        "person": person,
        "page": page,
        "which": which,
        "heading": heading,
        "empty": "Nobody older." if before else "Nobody yet.",
    }
    return render_list(request, "feeds/people.html", "feeds/_people_items.html", context)
