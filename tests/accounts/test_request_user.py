"""An authenticated request's user comes from this process's memory (accounts.backends),
with no database query once warm, and revocation still holds on the very next request:
a copy older than the token epoch the request read from Redis is never used."""

from __future__ import annotations

import json

import pytest
from django.db.models import F
from rest_framework.test import APIClient

from accounts import keys, sessions, tokens
from accounts.backends import AUTH_USER, USER_L1_TTL, user_get
from accounts.models import User
from accounts.selectors import USER
from core import cacheaside
from core.l1 import invalidation_channel
from core.redis import get_redis
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"
NEW_PASSWORD = "another-Strong-pass-43"


@pytest.fixture(autouse=True)
def listening():
    """The invalidation bus is listening (the user L1 is used only then); no session
    is known to this process yet."""
    assert cacheaside.l1().wait_until_listening(10)
    sessions.forget_user_hints()
    yield
    sessions.forget_user_hints()


def logged_in(user: User) -> APIClient:
    client = APIClient()
    response = client.post("/api/login", {"email": user.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    return client


def with_token(user: User) -> APIClient:
    response = APIClient().post("/api/token", {"email": user.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


def me(client: APIClient) -> dict:
    response = client.get("/api/me")
    assert response.status_code == 200, response.content
    return response.json()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bumped_elsewhere(user: User, **columns) -> int:
    """What another process's log-out-everywhere (or password change, or deactivation)
    leaves behind: the row's new epoch and Redis's mirror of it, and no message on the
    invalidation bus that this process could rely on. Returns the new epoch."""
    User.objects.filter(pk=user.pk).update(token_epoch=F("token_epoch") + 1, **columns)
    epoch = User.objects.values_list("token_epoch", flat=True).get(pk=user.pk)
    tokens.token_epoch_publish(user_id=user.pk, epoch=epoch)
    return epoch


# --- No query once warm --------------------------------------------------------------------


@pytest.mark.parametrize("limits", ["on", "off"])
def test_a_warm_session_request_reads_no_database_for_its_user(ada, limits, settings, django_assert_num_queries):
    if limits == "off":
        settings.KESTREL_RATE_LIMITS = {}
    client = logged_in(ada)
    me(client)  # this process's first read of Ada's row

    with django_assert_num_queries(0):
        body = me(client)

    assert body == {"userId": ada.pk, "email": ada.email, "username": "ada", "isStaff": False}


@pytest.mark.parametrize("limits", ["on", "off"])
def test_a_warm_bearer_request_reads_no_database_for_its_user(ada, limits, settings, django_assert_num_queries):
    if limits == "off":
        settings.KESTREL_RATE_LIMITS = {}
    client = with_token(ada)
    me(client)

    with django_assert_num_queries(0):
        body = me(client)

    assert body["userId"] == ada.pk


def test_a_session_this_process_has_not_seen_reads_its_user_from_the_database(ada, django_assert_num_queries):
    client = logged_in(ada)
    me(client)  # Ada's row is in the L1 now
    sessions.forget_user_hints()  # as another process would meet the session: no epoch read with it

    with django_assert_num_queries(1):
        me(client)
    with django_assert_num_queries(0):
        me(client)  # the session is known now, and its epoch read with it


def test_without_the_invalidation_bus_every_request_reads_the_database(ada, redis_server, django_assert_num_queries):
    client = with_token(ada)
    me(client)
    cacheaside.l1().stop()  # no subscriber: copies could miss a change, so none is used
    try:
        with django_assert_num_queries(1):
            me(client)
    finally:
        assert cacheaside.l1().wait_until_listening(10)


# --- Copies: fresh, private, bounded in time ------------------------------------------------


def test_each_request_gets_its_own_user_and_changing_it_changes_no_other(ada):
    first = user_get(user_id=ada.pk, epoch=0)
    first.email = "mallory@example.com"
    first.is_staff = True

    second = user_get(user_id=ada.pk, epoch=0)

    assert type(second) is User
    assert second is not first
    assert (second.email, second.is_staff) == ("ada@example.com", False)
    assert (second._state.adding, second._state.db) == (False, "default")
    assert second.get_deferred_fields() == set()
    second.name = "Ada L."
    second.save(update_fields=["name"])  # an ordinary instance: it saves
    assert User.objects.get(pk=ada.pk).name == "Ada L."


def test_a_copy_older_than_the_epoch_the_request_read_is_loaded_again(ada, django_assert_num_queries):
    clock = Clock()
    assert user_get(user_id=ada.pk, epoch=0, clock=clock).token_epoch == 0
    User.objects.filter(pk=ada.pk).update(token_epoch=F("token_epoch") + 1)  # no signal, no message

    with django_assert_num_queries(0):
        stale = user_get(user_id=ada.pk, epoch=0, clock=clock)  # a request that read epoch 0
    with django_assert_num_queries(1):
        fresh = user_get(user_id=ada.pk, epoch=1, clock=clock)
    with django_assert_num_queries(0):
        again = user_get(user_id=ada.pk, epoch=1, clock=clock)

    assert (stale.token_epoch, fresh.token_epoch, again.token_epoch) == (0, 1, 1)


def test_a_lookup_that_read_no_epoch_always_reads_the_database(ada, django_assert_num_queries):
    user_get(user_id=ada.pk, epoch=0)

    with django_assert_num_queries(1):
        user_get(user_id=ada.pk, epoch=None)


def test_a_copy_lives_user_l1_ttl_seconds(ada, django_assert_num_queries):
    clock = Clock()
    user_get(user_id=ada.pk, epoch=0, clock=clock)

    clock.now += USER_L1_TTL - 0.001
    with django_assert_num_queries(0):
        user_get(user_id=ada.pk, epoch=0, clock=clock)
    clock.now += 0.001
    with django_assert_num_queries(1):
        user_get(user_id=ada.pk, epoch=0, clock=clock)


def test_a_row_read_while_an_invalidation_arrives_is_not_kept(ada, django_assert_num_queries):
    def load_then_change():
        row = User.objects.filter(pk=ada.pk).values_list(*[f.attname for f in User._meta.concrete_fields]).first()
        cacheaside.invalidate_now(AUTH_USER.name, ada.pk)  # another process's write, while this one read
        return row

    cacheaside.get_or_load_local(AUTH_USER, ada.pk, load_then_change)

    with django_assert_num_queries(1):
        user_get(user_id=ada.pk, epoch=0)


def test_a_user_that_does_not_exist_is_none_and_not_remembered(django_assert_num_queries):
    with django_assert_num_queries(2):
        assert user_get(user_id=424242, epoch=0) is None
        assert user_get(user_id=424242, epoch=0) is None


# --- Revocation: immediate, whatever the bus does ---------------------------------------------


@pytest.mark.parametrize("limits", ["on", "off"])
@pytest.mark.parametrize("change", ["logout-all", "password", "deactivation"])
def test_a_revocation_in_another_process_ends_a_cached_session_on_its_next_request(ada, change, limits, settings):
    if limits == "off":
        settings.KESTREL_RATE_LIMITS = {}
    laptop = logged_in(ada)
    me(laptop)
    me(laptop)  # Ada's row cached here, her session known: the next request reads neither

    if change == "password":
        ada.set_password(NEW_PASSWORD)  # the hash the other process wrote
        bumped_elsewhere(ada, password=ada.password)
    elif change == "deactivation":
        bumped_elsewhere(ada, is_active=False)
    else:
        bumped_elsewhere(ada)

    assert laptop.get("/api/me").status_code == 401


@pytest.mark.parametrize("limits", ["on", "off"])
def test_a_log_out_everywhere_in_another_process_ends_a_cached_token_on_its_next_request(ada, limits, settings):
    if limits == "off":
        settings.KESTREL_RATE_LIMITS = {}
    phone = with_token(ada)
    me(phone)
    me(phone)

    bumped_elsewhere(ada)

    response = phone.get("/api/me")
    assert response.status_code == 403
    assert response.json() == {"error": "Token revoked"}


def test_the_database_decides_when_redis_lost_the_epoch_and_the_copy_was_dropped(
    ada, state_redis, django_capture_on_commit_callbacks
):
    laptop = logged_in(ada)
    me(laptop)
    with django_capture_on_commit_callbacks(execute=True):
        ada.set_password(NEW_PASSWORD)
        ada.save(update_fields=["password"])  # bumps the epoch; after commit, drops the copies
    state_redis.delete(keys.user_token_epoch(ada.pk))  # the mirror is lost

    assert laptop.get("/api/me").status_code == 401


def test_the_session_that_changed_the_password_stays_and_reads_no_database_after(
    ada, django_capture_on_commit_callbacks, django_assert_num_queries
):
    client, other = logged_in(ada), logged_in(ada)
    me(client)
    me(other)

    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post("/api/password", {"old": PASSWORD, "new": NEW_PASSWORD}, format="json")

    assert answer.status_code == 200
    assert other.get("/api/me").status_code == 401
    me(client)  # the new row
    with django_assert_num_queries(0):
        me(client)


# --- Deactivation and other changes ------------------------------------------------------------


def test_deactivating_a_user_bumps_the_epoch_and_its_mirror(ada, state_redis, django_capture_on_commit_callbacks):
    phone, laptop = with_token(ada), logged_in(ada)
    me(phone)
    me(laptop)
    user = User.objects.get(pk=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save()  # as the admin saves it

    assert User.objects.get(pk=ada.pk).token_epoch == 1
    assert state_redis.get(keys.user_token_epoch(ada.pk)) == b"1"
    assert phone.get("/api/me").json() == {"error": "Token revoked"}
    assert laptop.get("/api/me").status_code == 401


def test_saving_an_active_user_bumps_nothing(ada, django_capture_on_commit_callbacks):
    user = User.objects.get(pk=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        user.is_staff = True
        user.save()

    assert User.objects.get(pk=ada.pk).token_epoch == 0


def test_a_change_of_staff_rights_reaches_the_cached_user(ada, django_capture_on_commit_callbacks):
    client = logged_in(ada)
    assert me(client)["isStaff"] is False
    user = User.objects.get(pk=ada.pk)

    with django_capture_on_commit_callbacks(execute=True):
        user.is_staff = True
        user.save(update_fields=["is_staff"])

    assert me(client)["isStaff"] is True


def test_a_profile_edit_drops_the_cached_user_too(ada, django_assert_num_queries):
    user_get(user_id=ada.pk, epoch=0)
    User.objects.filter(pk=ada.pk).update(name="Ada L.")

    cacheaside.invalidate_now(USER.name, ada.pk)  # what accounts.services.user_update_profile sends

    assert user_get(user_id=ada.pk, epoch=0).name == "Ada L."


def test_a_message_from_another_process_drops_the_cached_user(ada, cache_redis, django_assert_num_queries):
    user_get(user_id=ada.pk, epoch=0)
    received = cacheaside.l1()
    before = received.partition(AUTH_USER.name, AUTH_USER.l1_max_entries).generation

    cache_redis.publish(invalidation_channel(), json.dumps({"type": AUTH_USER.name, "id": ada.pk}))

    assert wait_until(lambda: received.partition(AUTH_USER.name, 0).generation > before)
    with django_assert_num_queries(1):
        user_get(user_id=ada.pk, epoch=0)


def test_no_user_row_is_ever_written_to_redis(ada):
    client = logged_in(ada)
    me(client)
    me(with_token(ada))

    for role in ("state", "cache"):
        for key in get_redis(role).scan_iter(count=1000):
            assert ada.password.encode() not in (get_redis(role).dump(key) or b""), key


# --- Anonymous requests --------------------------------------------------------------------


def test_an_api_request_without_a_session_cookie_builds_no_user_and_still_varies_on_cookie(ada, monkeypatch):
    from django.contrib import auth

    built = []
    real_get_user = auth.get_user
    monkeypatch.setattr(auth, "get_user", lambda request: built.append(request.path) or real_get_user(request))

    response = APIClient().get(f"/api/users/{ada.pk}")
    assert response.status_code == 200
    assert built == []  # no session cookie: anonymous without loading a session or a user
    assert "Cookie" in response["Vary"]  # a shared cache must not hand it to someone logged in

    client = logged_in(ada)
    built.clear()
    assert me(client)["userId"] == ada.pk
    assert built == ["/api/me"]
