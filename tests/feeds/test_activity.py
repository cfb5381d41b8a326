"""Activity streams (the article's part 5.2): posted, liked and followed, XADDed after commit
with MAXLEN ~, read newest first by GET /api/users/{id}/activity with stream-id cursors."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from feeds import keys, services
from feeds.services import follow_create
from posts.selectors import user_activity_page
from posts.services import post_create, post_delete, post_like, post_unlike

pytestmark = pytest.mark.django_db


@pytest.fixture
def notified(monkeypatch):
    """The notifications the activity hooks queue (still delivered for real)."""
    calls: list[dict] = []
    real = services.notification_queue_once

    def spy(pipe, **kwargs):
        calls.append({name: kwargs[name] for name in ("user_id", "kind", "message", "data")})
        return real(pipe, **kwargs)

    monkeypatch.setattr(services, "notification_queue_once", spy)
    return calls


def actions(body: dict) -> list[tuple[str, int]]:
    return [(item["action"], item["targetId"]) for item in body["items"]]


def test_posting_liking_and_following_are_read_newest_first(ada, bob, after_commit):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    with after_commit():
        post_like(post=post, user=bob)
    with after_commit():
        follow_create(follower=bob, followee=ada)

    response = APIClient().get(f"/api/users/{bob.pk}/activity")

    assert response.status_code == 200
    body = response.json()
    assert body["userId"] == bob.pk
    assert actions(body) == [("followed", ada.pk), ("liked", post.pk)]
    assert body["next"] is None
    item = body["items"][0]
    assert set(item) == {"id", "action", "targetId", "timestamp"}
    assert item["timestamp"] >= int(item["id"].split("-")[0]) - 1000
    assert actions(APIClient().get(f"/api/users/{ada.pk}/activity").json()) == [("posted", post.pk)]


def test_nothing_is_recorded_before_commit(ada, state_redis, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        post_create(author=ada, title="Hello", content="...")
        assert not state_redis.exists(keys.user_activity(ada.pk))
    for callback in callbacks:
        callback()

    assert state_redis.xlen(keys.user_activity(ada.pk)) == 1


def test_a_like_notifies_the_author_and_an_unlike_does_not(ada, bob, notified, after_commit):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")

    with after_commit():
        post_like(post=post, user=bob)
    with after_commit():
        post_unlike(post=post, user=bob)

    assert notified == [
        {
            "user_id": ada.pk,
            "kind": "like",
            "message": "@bob liked “Hello”",
            "data": {"postId": post.pk, "userId": bob.pk},
        }
    ]
    assert actions(user_activity_page(user_id=bob.pk)) == [("liked", post.pk)]


def test_activity_pages_by_cursor_are_disjoint_and_in_order(ada):
    ids = [services.activity_add(user_id=ada.pk, action="followed", target_id=ada.pk) for _ in range(5)]
    api = APIClient()

    pages, before = [], None
    while True:
        query = {"count": 2} if before is None else {"count": 2, "before": before}
        body = api.get(f"/api/users/{ada.pk}/activity", query).json()
        pages.append([item["id"] for item in body["items"]])
        before = body["next"]
        if before is None:
            break

    newest_first = list(reversed(ids))
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]


def test_activity_counts_50_by_default(ada):
    for _ in range(60):
        services.activity_add(user_id=ada.pk, action="followed", target_id=ada.pk)

    body = APIClient().get(f"/api/users/{ada.pk}/activity").json()

    assert len(body["items"]) == 50
    assert body["next"] == body["items"][-1]["id"]


def test_the_stream_is_trimmed_with_maxlen(ada, state_redis, monkeypatch):
    monkeypatch.setattr(keys, "STREAM_MAXLEN", 10)

    first = services.activity_add(user_id=ada.pk, action="followed", target_id=ada.pk)
    for _ in range(249):
        services.activity_add(user_id=ada.pk, action="followed", target_id=ada.pk)

    # MAXLEN ~ drops whole macro-nodes (100 entries by default), never below 10.
    assert 10 <= state_redis.xlen(keys.user_activity(ada.pk)) <= 10 + 100
    assert state_redis.xrange(keys.user_activity(ada.pk), min=first, max=first) == []


def test_activity_about_a_deleted_post_is_hidden(ada, bob, after_commit):
    with after_commit():
        kept = post_create(author=ada, title="kept", content="...")
    with after_commit():
        gone = post_create(author=ada, title="gone", content="...")
    with after_commit():
        post_delete(post=gone, editor=ada)

    assert actions(user_activity_page(user_id=ada.pk)) == [("posted", kept.pk)]


@pytest.mark.parametrize(
    ("query", "field"),
    [({"before": "nope"}, "before"), ({"before": "1-"}, "before"), ({"count": 0}, "count"), ({"count": 101}, "count")],
)
def test_bad_activity_parameters_are_400(ada, query, field):
    response = APIClient().get(f"/api/users/{ada.pk}/activity", query)

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid input"
    assert list(response.json()["details"]) == [field]


def test_activity_of_an_unknown_user_is_404():
    response = APIClient().get("/api/users/999999/activity")

    assert response.status_code == 404
    assert response.json() == {"error": "User not found"}


def test_activity_is_lost_not_fatal_when_redis_is_down(ada, redis_down):
    assert services.activity_add(user_id=ada.pk, action="posted", target_id=1) is None
