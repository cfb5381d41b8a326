"""The session API of the reference article's part 3: register, login, me, logout."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from accounts import keys
from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def session_key_of(client: APIClient) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def test_register_creates_the_user_and_logs_them_in(api, state_redis):
    response = api.post(
        "/api/register", {"email": "Ada@Example.com", "username": "ada", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["email"] == "ada@example.com"
    assert User.objects.get(username="ada").check_password(PASSWORD)
    assert state_redis.exists(keys.session(session_key_of(api)))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "ada", "password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "password": PASSWORD}, "username"),
        ({"email": "ada@example.com", "username": "ada"}, "password"),
        ({"email": "not-an-email", "username": "ada", "password": PASSWORD}, "email"),
        ({"email": "ada@example.com", "username": "a" * 151, "password": PASSWORD}, "username"),
        ({"email": "ada@example.com", "username": "no spaces!", "password": PASSWORD}, "username"),
        ({"email": "ada@example.com", "username": "ada", "password": "123"}, "password"),
    ],
)
def test_register_rejects_bad_input_and_writes_nothing(api, payload, field):
    response = api.post("/api/register", payload, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    assert field in body["details"]
    assert not User.objects.exists()


@pytest.mark.parametrize(
    ("email", "username", "field"),
    [("ADA@example.com", "someone", "email"), ("other@example.com", "ADA", "username")],
)
def test_register_refuses_a_taken_email_or_username_in_any_case(api, ada, email, username, field):
    response = api.post("/api/register", {"email": email, "username": username, "password": PASSWORD}, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]
    assert User.objects.count() == 1


def test_malformed_json_gets_a_clear_400(api):
    response = api.post("/api/register", data='{"email": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed request body")


def test_login_with_wrong_password_is_401_invalid_credentials(api, make_user):
    make_user(email="ada@example.com")

    response = api.post("/api/login", {"email": "ada@example.com", "password": "wrong"}, format="json")

    assert response.status_code == 401
    assert response.json() == {"error": "Invalid credentials"}
    assert settings.SESSION_COOKIE_NAME not in api.cookies


def test_login_with_unknown_email_is_the_same_401(api):
    response = api.post("/api/login", {"email": "nobody@example.com", "password": "whatever"}, format="json")

    assert response.status_code == 401
    assert response.json() == {"error": "Invalid credentials"}


def test_me_without_a_session_is_401_not_logged_in(api):
    response = api.get("/api/me")

    assert response.status_code == 401
    assert response.json() == {"error": "Not logged in"}


def test_login_then_me_returns_the_user_from_the_redis_session(api, make_user, state_redis):
    user = make_user(email="ada@example.com")

    login = api.post("/api/login", {"email": "ADA@example.com", "password": PASSWORD}, format="json")
    me = api.get("/api/me")

    assert login.status_code == 200
    assert login.json()["message"] == "Logged in"
    assert me.status_code == 200
    assert me.json()["userId"] == user.pk
    assert me.json()["email"] == "ada@example.com"
    raw = state_redis.get(keys.session(session_key_of(api)))
    assert json.loads(raw)["_auth_user_id"] == str(user.pk)  # JSON, not pickle


def test_the_session_key_has_the_cookie_lifetime_as_ttl(api, make_user, state_redis):
    make_user(email="ada@example.com")
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    ttl = state_redis.ttl(keys.session(session_key_of(api)))

    assert settings.SESSION_COOKIE_AGE - 5 <= ttl <= settings.SESSION_COOKIE_AGE == 24 * 60 * 60


def test_logout_deletes_the_session_from_redis(api, make_user, state_redis):
    make_user(email="ada@example.com")
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")
    session_key = keys.session(session_key_of(api))
    assert state_redis.exists(session_key)

    response = api.post("/api/logout")

    assert response.status_code == 200
    assert response.json() == {"message": "Logged out"}
    assert not state_redis.exists(session_key)
    assert api.get("/api/me").status_code == 401


def test_a_session_deleted_in_redis_is_logged_out(api, make_user, state_redis):
    make_user(email="ada@example.com")
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    state_redis.delete(keys.session(session_key_of(api)))

    assert api.get("/api/me").status_code == 401


def test_the_database_has_no_session_table(api, make_user):
    make_user(email="ada@example.com")
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    assert "django_session" not in connection.introspection.table_names()


def test_session_cookie_flags(api, make_user):
    make_user(email="ada@example.com")

    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")
    cookie = api.cookies[settings.SESSION_COOKIE_NAME]

    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["secure"] is True  # DEBUG is off in tests, as in production
    assert int(cookie["max-age"]) == 24 * 60 * 60


def test_logout_with_a_session_needs_the_csrf_token(make_user):
    make_user(email="ada@example.com")
    api = APIClient(enforce_csrf_checks=True)
    api.post("/api/login", {"email": "ada@example.com", "password": PASSWORD}, format="json")

    refused = api.post("/api/logout")
    accepted = api.post("/api/logout", HTTP_X_CSRFTOKEN=api.cookies[settings.CSRF_COOKIE_NAME].value)

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["error"]
    assert accepted.status_code == 200


def test_unknown_api_paths_are_json_404(api):
    response = api.get("/api/no-such-thing")

    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}


def test_openapi_schema_and_docs_are_served(api):
    schema = api.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = api.get("/api/docs")

    assert schema.status_code == 200
    assert "/api/login" in schema.json()["paths"]
    assert docs.status_code == 200
