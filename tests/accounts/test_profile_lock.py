"""PATCH /api/users/{id} under the profile lock: concurrent edits, 409, fencing, Redis down."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts import keys, services
from accounts.models import User
from core import metrics
from core.locks import acquire, lock_key
from core.redis import UNAVAILABLE_ERRORS

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, seen by every thread's connection


def session_of_its_own(user: User) -> APIClient:
    """A new API client logged in as `user`: another tab, with a session of its own."""
    client = APIClient()
    client.force_login(user)
    return client


def test_two_concurrent_edits_of_a_profile_one_wins_and_the_other_gets_409(ada, monkeypatch):
    # The first edit is held inside its lock until the second has been answered, so
    # the two requests really overlap (each alone takes a few milliseconds).
    inside, let_go = threading.Event(), threading.Event()
    real_fenced_update = services.fenced_update

    def held_fenced_update(*args, **kwargs):
        inside.set()
        let_go.wait(timeout=5)
        return real_fenced_update(*args, **kwargs)

    monkeypatch.setattr(services, "fenced_update", held_fenced_update)
    responses = {}

    def edit(label: str, bio: str) -> None:
        try:
            responses[label] = session_of_its_own(ada).patch(f"/api/users/{ada.pk}", {"bio": bio}, format="json")
        finally:
            connection.close()

    first = threading.Thread(target=edit, args=("first", "from the first tab"))
    first.start()
    assert inside.wait(timeout=5)
    monkeypatch.setattr(services, "fenced_update", real_fenced_update)
    second = threading.Thread(target=edit, args=("second", "from the second tab"))
    second.start()
    second.join(timeout=5)
    let_go.set()
    first.join(timeout=5)

    assert responses["second"].status_code == 409
    assert responses["second"].json() == {"error": "Resource is being updated"}
    assert responses["first"].status_code == 200
    assert responses["first"].json()["bio"] == "from the first tab"
    ada.refresh_from_db()
    assert ada.bio == "from the first tab"
    assert ada.profile_fence > 0
    assert metrics.value("lock.contended", lock="user:*:profile") == 1


def test_an_edit_after_the_first_finished_succeeds_and_is_shown_at_once(ada, as_ada):
    assert as_ada.patch(f"/api/users/{ada.pk}", {"bio": "one"}, format="json").status_code == 200

    response = as_ada.patch(f"/api/users/{ada.pk}", {"name": "Ada L."}, format="json")

    assert response.status_code == 200
    assert APIClient().get(f"/api/users/{ada.pk}").json()["name"] == "Ada L."  # the cache was dropped
    ada.refresh_from_db()
    assert (ada.name, ada.bio) == ("Ada L.", "one")


def test_an_edit_overtaken_by_a_later_lock_holder_is_refused_with_409(ada, as_ada, state_redis, monkeypatch):
    # This edit's lock "expires" before its UPDATE; a later holder has already written.
    real_fenced_update = services.fenced_update

    def overtaken(queryset, fence_field, fence, /, **values):
        state_redis.delete(lock_key(keys.user_profile_lock(ada.pk)))
        later = acquire(keys.user_profile_lock(ada.pk), ttl_ms=1_000)
        assert real_fenced_update(queryset, fence_field, later.fence, bio="the later edit")
        later.release()
        return real_fenced_update(queryset, fence_field, fence, **values)

    monkeypatch.setattr(services, "fenced_update", overtaken)

    response = as_ada.patch(f"/api/users/{ada.pk}", {"bio": "the stalled edit"}, format="json")

    assert response.status_code == 409
    ada.refresh_from_db()
    assert ada.bio == "the later edit"


def test_no_profile_edit_without_redis_the_lock_fails_closed(ada, redis_down):
    with pytest.raises(UNAVAILABLE_ERRORS):
        services.user_update_profile(user=ada, bio="written without a lock")

    ada.refresh_from_db()
    assert ada.bio == ""
