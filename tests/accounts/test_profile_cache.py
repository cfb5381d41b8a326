"""The cached public profile is dropped when a column it shows changes, and only then."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts import keys
from accounts.backends import AUTH_USER
from accounts.selectors import USER, user_profile

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


def test_a_log_in_leaves_the_cached_profile_in_place(
    ada, cache_redis, django_assert_num_queries, django_capture_on_commit_callbacks
):
    user_profile(user_id=ada.pk)  # cached
    before = ada.last_login

    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post("/api/login", {"email": ada.email, "password": PASSWORD}, format="json")

    assert response.status_code == 200
    ada.refresh_from_db()
    assert ada.last_login != before  # the log-in did write last_login
    assert cache_redis.exists(keys.user_profile(ada.pk))
    with django_assert_num_queries(0):
        assert user_profile(user_id=ada.pk)["username"] == "ada"


def test_a_password_change_leaves_the_cached_profile_in_place(ada, cache_redis, django_capture_on_commit_callbacks):
    user_profile(user_id=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        ada.set_password("another-Strong-pass-43")
        ada.save(update_fields=["password"])

    assert cache_redis.exists(keys.user_profile(ada.pk))


@pytest.mark.parametrize("update_fields", [["username"], None])
def test_a_username_change_drops_the_cached_profile(
    ada, cache_redis, update_fields, django_capture_on_commit_callbacks
):
    user_profile(user_id=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        ada.username = "ada_lovelace"
        ada.save(update_fields=update_fields)

    assert not cache_redis.exists(keys.user_profile(ada.pk))
    assert user_profile(user_id=ada.pk)["username"] == "ada_lovelace"


def test_deactivating_a_user_drops_the_cached_profile(ada, django_capture_on_commit_callbacks):
    user_profile(user_id=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        ada.is_active = False
        ada.save(update_fields=["is_active"])

    assert user_profile(user_id=ada.pk) is None


def test_a_log_in_publishes_no_invalidation(ada, django_capture_on_commit_callbacks):
    from core import metrics

    with django_capture_on_commit_callbacks(execute=True):
        response = APIClient().post("/api/login", {"email": ada.email, "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert metrics.value("cache.invalidation", family=USER.name) == 0
    assert metrics.value("cache.invalidation", family=AUTH_USER.name) == 0
