"""One Redis round trip per authenticated request: the session read rides in the rate
limiter's script once the process knows the session's user, and revocation still
takes effect on the very next request."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts import keys, sessions
from core.ratelimit.policies import load_policies
from core.ratelimit.script import rate_limit_key
from core.redis import get_redis

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


@pytest.fixture(autouse=True)
def _no_hints():
    sessions.forget_user_hints()
    yield
    sessions.forget_user_hints()


def logged_in(user) -> APIClient:
    client = APIClient()
    response = client.post("/api/login", {"email": user.email, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    return client


def session_key_of(client: APIClient) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def api_counter(subject: str) -> bytes | None:
    """The general API limit's counter of `subject` ("user:7", "ip:127.0.0.1")."""
    policy = next(p for p in load_policies() if p.name == "api")
    return get_redis("state").get(rate_limit_key(policy, subject))


def test_a_session_request_costs_one_evalsha_once_the_process_knows_the_session(ada, sent):
    client = logged_in(ada)  # the log-in's own save tells this process whose session it is
    sent.clear()

    response = client.get("/api/me")

    assert response.status_code == 200
    assert response.json()["userId"] == ada.pk
    assert sent == ["EVALSHA"]
    assert api_counter(f"user:{ada.pk}") is not None  # counted as Ada, not by address


def test_a_process_that_has_not_seen_the_session_reads_it_once_then_rides_the_script(ada, sent):
    client = logged_in(ada)
    sessions.forget_user_hints()  # as another web process, which never saw this log-in
    sent.clear()

    first = client.get("/api/me")
    first_sent = list(sent)
    sent.clear()
    second = client.get("/api/me")

    assert (first.status_code, second.status_code) == (200, 200)
    assert first_sent == ["GET", "EVALSHA"]
    assert sent == ["EVALSHA"]


def test_a_bearer_request_costs_one_evalsha(ada, sent):
    client = APIClient()
    tokens = client.post("/api/token", {"email": ada.email, "password": PASSWORD}, format="json").json()
    sent.clear()

    response = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    assert response.status_code == 200
    assert sent == ["EVALSHA"]


def test_with_rate_limiting_off_a_session_request_costs_its_session_read_alone(ada, settings, sent):
    settings.KESTREL_RATE_LIMITS = {}
    client = logged_in(ada)  # a new client: its middleware reads the settings above
    sent.clear()

    response = client.get("/api/me")

    assert response.status_code == 200
    assert sent == ["MGET"]  # the session and its user's token epoch


def test_a_session_deleted_in_redis_is_anonymous_at_once_and_counted_by_address(ada, sent):
    client = logged_in(ada)
    client.get("/api/me")
    counted_as_ada = api_counter(f"user:{ada.pk}")
    get_redis("state").delete(keys.session(session_key_of(client)))  # another process logged it out
    sent.clear()

    response = client.get("/api/me")

    assert response.status_code == 401
    assert sent == ["EVALSHA"]  # the script found the session gone: no second read
    assert api_counter(f"user:{ada.pk}") == counted_as_ada
    assert api_counter("ip:127.0.0.1") is not None


@pytest.mark.parametrize("ending", ["logout", "logout-all", "password"])
def test_every_way_a_session_ends_holds_on_the_next_request_of_a_known_session(
    ada, ending, django_capture_on_commit_callbacks
):
    mine, other = logged_in(ada), logged_in(ada)
    assert other.get("/api/me").status_code == 200  # this process now knows both sessions

    # As after a real commit: the epoch's mirror is written then.
    with django_capture_on_commit_callbacks(execute=True):
        if ending == "logout":
            other.post("/api/logout", format="json")
        elif ending == "logout-all":
            assert mine.post("/api/logout-all", format="json").status_code == 200
        else:
            answer = mine.post("/api/password", {"old": PASSWORD, "new": "another-Strong-pass-43"}, format="json")
            assert answer.status_code == 200

    assert other.get("/api/me").status_code == 401


def test_a_known_session_fails_closed_when_redis_is_down(ada, redis_server):
    client = logged_in(ada)
    redis_server.stop()
    try:
        response = client.get("/api/me")
    finally:
        redis_server.start()

    assert response.status_code == 503
    assert response.json() == {"error": "Redis is unavailable; please try again shortly."}


def test_the_view_writes_to_the_session_the_script_read(ada, state_redis, django_capture_on_commit_callbacks):
    client = logged_in(ada)
    old_key = session_key_of(client)

    # A password change keeps the caller's session under a new key with the new hash.
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post("/api/password", {"old": PASSWORD, "new": "another-Strong-pass-43"}, format="json")

    assert answer.status_code == 200
    assert session_key_of(client) != old_key
    assert not state_redis.exists(keys.session(old_key))
    assert client.get("/api/me").status_code == 200
