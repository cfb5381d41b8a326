"""The notifications page: each item links to what it is about, "Mark all read", and one
relative-time style ("just now", "5 min")."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.templatetags.kestrel import ago
from feeds.notifications import notification_list, notify

pytestmark = pytest.mark.django_db


def test_each_notification_links_to_what_it_is_about(ada, as_ada):
    notify(user_id=ada.pk, kind="like", message="@grace liked “Hello”", data={"postId": 7, "userId": 3})
    notify(user_id=ada.pk, kind="follow", message="@grace followed you", data={"userId": 3})
    notify(user_id=ada.pk, kind="report", message="Your report is ready", data={"jobId": "x", "download": "/api/x"})
    notify(user_id=ada.pk, kind="message", message="Hello from the team")

    page = as_ada.get("/notifications").content.decode()

    assert 'href="/posts/7"' in page
    assert 'href="/users/3"' in page
    assert 'href="/reports"' in page
    assert '<span class="notification-text">Hello from the team</span>' in page  # about nothing else
    assert "just now" in page
    assert "minutes ago" not in page


def test_mark_all_read_marks_every_notification_read_and_returns_to_the_page(ada, as_ada):
    for n in range(3):
        notify(user_id=ada.pk, kind="message", message=f"note {n}")

    response = as_ada.post("/notifications/read")

    assert response.status_code == 302
    assert response["Location"] == "/notifications"
    assert not any(n["unread"] for n in notification_list(user_id=ada.pk)["notifications"])


def test_mark_all_read_needs_a_login_and_a_post(client, as_ada):
    assert client.post("/notifications/read").status_code == 302  # to log in
    response = as_ada.get("/notifications/read")  # no dead end: back to the page with the button
    assert (response.status_code, response["Location"]) == (302, "/notifications")


def test_relative_times_read_the_same_everywhere():
    now = timezone.now()
    assert ago(now - timedelta(seconds=5), now) == "just now"
    assert ago(now - timedelta(minutes=5), now) == "5 min"
    assert ago(now - timedelta(hours=3), now) == "3 h"
    assert ago(now - timedelta(days=2), now) == "2 d"
    assert ago(None) == ""
