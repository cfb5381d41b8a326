"""Site pages of the feeds app: the follow button of a profile page (the notifications
page is feeds.notification_views). Thin: the work is in feeds.services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect

from accounts.models import User
from core.types import AuthenticatedHttpRequest
from core.views import post_only
from feeds.services import AlreadyFollowing, NotFollowing, follow_create, follow_delete


@post_only("profile")
@login_required
def follow_toggle(request: AuthenticatedHttpRequest, user_id: int) -> HttpResponse:
    """POST from a profile's follow button: follow, or unfollow with action=unfollow, then
    back to the profile. A double click is not an error: the state is the one wanted."""
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
