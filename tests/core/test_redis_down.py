"""With the private Redis server really stopped: clear 503s, never a traceback."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


@pytest.fixture
def logged_in(make_user) -> APIClient:
    make_user(email="ada@example.com")
    api = APIClient()
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")
    return api


def test_healthz_names_both_redis_roles_when_redis_is_down(client, redis_down):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["redis_state", "redis_cache"]
    assert body["checks"]["database"]["ok"] is True


def test_api_needing_the_session_answers_503_json(logged_in, redis_down):
    response = logged_in.get("/api/me")

    assert response.status_code == 503
    assert response.json() == {"error": "Redis is unavailable; please try again shortly."}
    assert response["Retry-After"]


def test_login_while_redis_is_down_is_503_and_creates_no_session(make_user, redis_down):
    make_user(email="ada@example.com")
    api = APIClient()

    response = api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]


def test_pages_answer_503_with_a_page_not_a_traceback(logged_in, redis_down):
    response = logged_in.get("/", HTTP_ACCEPT="text/html")

    assert response.status_code == 503
    assert b"Redis is unavailable" in response.content
    assert b"Traceback" not in response.content


def test_everything_works_again_once_redis_is_back(logged_in, redis_server):
    redis_server.stop()
    assert logged_in.get("/api/me").status_code == 503

    redis_server.start()

    # The session died with the server (no persistence in tests): logged out, not broken.
    assert logged_in.get("/api/me").status_code == 401
    assert APIClient().get("/healthz").status_code == 200


@pytest.fixture
def state_redis_full(role_config):
    """The state role at its maxmemory under noeviction (every node of a cluster): every write is refused (OOM)."""
    role_config("state", "maxmemory", "1")


def test_a_full_state_role_refuses_a_site_login_with_503_not_a_traceback(client, make_user, state_redis_full):
    make_user(email="ada@example.com")

    response = client.post("/login", {"email": "ada@example.com", "password": PASSWORD}, HTTP_ACCEPT="text/html")

    assert response.status_code == 503
    assert b"Redis is unavailable" in response.content
    assert b"Traceback" not in response.content
