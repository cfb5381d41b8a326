"""Following and unfollowing (feeds.services.follow_create, follow_delete): the API and the
profile page's button, one row per follow, and the effects after commit: accounts' Redis
mirror of the graph, the follower's activity, the followee's notification. The graph
itself (lists, the mirror, its rebuilds) is tested in tests/accounts/test_follows.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts import keys
from accounts.models import Follow
from accounts.selectors import follow_exists
from feeds import keys as feed_keys
from feeds.services import follow_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def notified(monkeypatch):
    """The notifications the follow graph queues (still delivered for real)."""
    import feeds.services

    calls: list[dict] = []
    real = feeds.services.notification_queue_once

    def spy(pipe, **kwargs):
        calls.append({name: kwargs[name] for name in ("user_id", "kind", "message", "data")})
        return real(pipe, **kwargs)

    monkeypatch.setattr(feeds.services, "notification_queue_once", spy)
    return calls


def follow(follower, followee, callbacks) -> None:
    with callbacks(execute=True):
        follow_create(follower=follower, followee=followee)


# --- The API ---------------------------------------------------------------------------------


def test_following_someone_is_201_and_records_one_row(
    as_bob, bob, ada, notified, state_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_bob.post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 201
    assert response.json() == {"following": True, "userId": ada.pk}
    assert list(Follow.objects.values_list("follower_id", "followee_id")) == [(bob.pk, ada.pk)]
    assert [(n["user_id"], n["kind"]) for n in notified] == [(ada.pk, "follow")]
    [(_, fields)] = state_redis.xrange(feed_keys.user_activity(bob.pk))
    assert fields[b"action"] == b"followed"
    assert fields[b"targetId"] == str(ada.pk).encode()


def test_following_twice_is_409_and_writes_nothing_more(
    as_bob, bob, ada, notified, state_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        as_bob.post(f"/api/users/{ada.pk}/follow")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 409
    assert response.json() == {"error": "You already follow this user"}
    assert Follow.objects.count() == 1
    assert callbacks == []  # no mirror write, no activity, no notification
    assert len(notified) == 1
    assert state_redis.xlen(feed_keys.user_activity(bob.pk)) == 1


def test_following_yourself_is_400_and_writes_nothing(as_bob, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post(f"/api/users/{bob.pk}/follow")

    assert response.status_code == 400
    assert response.json() == {"error": "Invalid input", "details": {"userId": ["You cannot follow yourself."]}}
    assert not Follow.objects.exists()
    assert callbacks == []


def test_following_an_unknown_user_is_404_and_writes_nothing(as_bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post("/api/users/999999/follow")

    assert response.status_code == 404
    assert response.json() == {"error": "User not found"}
    assert not Follow.objects.exists()
    assert callbacks == []


def test_following_needs_a_login(ada):
    response = APIClient().post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 401
    assert not Follow.objects.exists()


def test_unfollowing_is_204_and_unfollowing_again_is_404(as_bob, bob, ada, django_capture_on_commit_callbacks):
    follow(bob, ada, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        first = as_bob.delete(f"/api/users/{ada.pk}/follow")
    second = as_bob.delete(f"/api/users/{ada.pk}/follow")

    assert first.status_code == 204
    assert second.status_code == 404
    assert second.json() == {"error": "You do not follow this user"}
    assert not Follow.objects.exists()
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)


# --- After commit ----------------------------------------------------------------------------


def test_the_mirror_changes_only_after_commit(bob, ada, cache_redis, django_capture_on_commit_callbacks):
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)  # builds bob's (empty) set

    with django_capture_on_commit_callbacks() as callbacks:
        follow_create(follower=bob, followee=ada)
        assert not cache_redis.sismember(keys.user_following(bob.pk), ada.pk)
    for callback in callbacks:
        callback()

    assert cache_redis.sismember(keys.user_following(bob.pk), ada.pk)
    assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)


# --- The profile page's button ---------------------------------------------------------------


def test_the_profile_page_shows_counts_and_a_follow_button(client, bob, ada, django_capture_on_commit_callbacks):
    client.force_login(bob)

    page = client.get(f"/users/{ada.pk}").content.decode()
    assert "0 followers" in page
    assert 'value="follow"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/users/{ada.pk}/follow", {"action": "follow"})
    assert response.status_code == 302

    page = client.get(response["Location"]).content.decode()
    assert "You now follow @ada." in page
    assert "1 follower" in page
    assert 'value="unfollow"' in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/users/{ada.pk}/follow", {"action": "unfollow"})
    assert "0 followers" in client.get(f"/users/{ada.pk}").content.decode()
    assert not Follow.objects.exists()
