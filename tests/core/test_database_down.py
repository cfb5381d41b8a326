"""With the database unreachable: a clear 503, never a 500 with a traceback.

The connection really fails: the test points Django's connection at a database it
cannot open (a file in a folder that does not exist, or a port nothing listens on),
then puts the real settings back.
"""

from __future__ import annotations

import contextlib

import pytest
from django.db import connections
from django.test import Client

from devstack.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-Strong-pass-42"


@contextlib.contextmanager
def unreachable_database():
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-kestrel-folder/db.sqlite3"
    else:
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.fixture
def database_down():
    with unreachable_database():
        yield


@pytest.fixture
def logged_in(make_user) -> Client:
    make_user(email="ada@example.com")
    # Exceptions Django turned into responses must stay responses here, as in production.
    client = Client(raise_request_exception=False)
    assert (
        client.post(
            "/api/login", {"email": "ada@example.com", "password": PASSWORD}, content_type="application/json"
        ).status_code
        == 200
    )
    return client


def test_an_api_view_that_needs_the_database_answers_503_json(database_down):
    response = Client(raise_request_exception=False).get("/api/users/1")

    assert response.status_code == 503
    assert response.json() == {"error": "The database is unavailable; please try again shortly."}
    assert response["Retry-After"]


def test_a_failure_before_the_view_answers_503_json_too(logged_in, database_down):
    # The session names the user; the rate limiter loads their row before any view runs.
    response = logged_in.get("/api/me")

    assert response.status_code == 503
    assert response.json() == {"error": "The database is unavailable; please try again shortly."}


def test_pages_answer_503_with_a_page_not_a_traceback(logged_in, database_down):
    response = logged_in.get("/", HTTP_ACCEPT="text/html")

    assert response.status_code == 503
    assert b"The database is unavailable" in response.content
    assert b"Traceback" not in response.content


def test_everything_works_again_once_the_database_is_back(logged_in):
    with unreachable_database():
        assert logged_in.get("/api/me").status_code == 503

    response = logged_in.get("/api/me")

    assert response.status_code == 200
    assert response.json()["email"] == "ada@example.com"


def test_a_bearer_log_out_with_the_database_down_revokes_and_says_so(database_down_after_login):
    client, access = database_down_after_login
    with unreachable_database():
        response = client.post(
            "/api/logout", {}, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {access}"
        )
        assert response.status_code == 200, response.content
        # The client was told: the token no longer works.
        assert client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 403


@pytest.fixture
def database_down_after_login(make_user, listening_l1):
    make_user(email="ada@example.com")
    client = Client(raise_request_exception=False)
    access = client.post(
        "/api/token", {"email": "ada@example.com", "password": PASSWORD}, content_type="application/json"
    ).json()["access"]
    assert client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200  # the user is now in the L1
    return client, access
