"""The notifications page: the newest notifications, marked read by being seen."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import NoReverseMatch, reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET

from core.types import AuthenticatedHttpRequest
from core.views import post_only, render_list
from feeds.notifications import Notification, notification_list, notifications_mark_read
from feeds.stream_ids import stream_id_or_none

PAGE_SIZE = 50


@login_required
@require_GET
def notifications(request: AuthenticatedHttpRequest) -> HttpResponse:
    """GET /notifications?before=: a page of PAGE_SIZE, newest first, marked read once shown.
    Redis errors become a 503 (the page exists only to show them)."""
    before = request.GET.get("before")
    if stream_id_or_none(before) is None:
        before = None  # a mangled link shows the first page rather than an error
    page = notification_list(user_id=request.user.pk, count=PAGE_SIZE, before=before)
    if page["notifications"]:
        # Read on view: up to the newest one shown (the flags above still say what was new).
        notifications_mark_read(user_id=request.user.pk, up_to=page["notifications"][0]["id"])
    for notification in page["notifications"]:
        notification["when"] = parse_datetime(notification["at"]) if notification["at"] else None
        notification["link"] = notification_link(notification)
    context = {"page": page, "empty": "Nothing older." if before else "No notifications yet."}
    response = render_list(request, "feeds/notifications.html", "feeds/_notification_items.html", context)
    response["Cache-Control"] = "no-store"  # a back button must not show stale unread marks
    return response


@post_only("notifications")
@login_required
def notifications_read_all(request: AuthenticatedHttpRequest) -> HttpResponseRedirect:
    """POST /notifications/read: mark every notification read, then back to the page."""
    notifications_mark_read(user_id=request.user.pk)
    return redirect("notifications")


# What each kind of notification is about: the page it links to, by URL name.
_LINKS = {"like": ("post-detail", "postId"), "post": ("post-detail", "postId"), "follow": ("profile", "userId")}


def notification_link(notification: Notification) -> str | None:
    """The page a notification is about (a post, a person, the reports), or None."""
    if notification["kind"] == "report":
        return reverse("reports")
    name, field = _LINKS.get(notification["kind"], (None, None))
    target = notification["data"].get(field) if field else None
    if name is None or not isinstance(target, int):
        return None
    try:
        return reverse(name, args=[target])
    except NoReverseMatch:
        return None
