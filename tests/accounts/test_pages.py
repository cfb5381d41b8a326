"""The site's sign-up, log-in and log-out pages."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from accounts import keys
from accounts.models import User

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


def test_home_page_invites_anonymous_visitors(client):
    response = client.get("/")

    assert response.status_code == 200
    assert b"Welcome to Kestrel" in response.content
    assert b'href="/signup"' in response.content


def test_signup_creates_the_account_logs_in_and_greets(client, state_redis):
    form = client.get("/signup")
    assert b"csrfmiddlewaretoken" in form.content

    response = client.post(
        "/signup", {"email": "ada@example.com", "username": "ada", "password": PASSWORD}, follow=True
    )

    assert response.status_code == 200
    assert b"Hello, ada!" in response.content
    assert User.objects.filter(username="ada").exists()
    assert state_redis.exists(keys.session(client.cookies[settings.SESSION_COOKIE_NAME].value))


def test_signup_with_a_taken_email_shows_the_error_and_writes_nothing(client, make_user):
    make_user(email="ada@example.com")

    response = client.post("/signup", {"email": "ADA@example.com", "username": "ada2", "password": PASSWORD})

    assert response.status_code == 400
    assert b"already exists" in response.content
    assert User.objects.count() == 1


def test_login_with_bad_credentials_shows_a_message(client, make_user):
    make_user(email="ada@example.com")

    response = client.post("/login", {"email": "ada@example.com", "password": "wrong"})

    assert response.status_code == 400
    assert b"Invalid email or password." in response.content
    assert settings.SESSION_COOKIE_NAME not in client.cookies


def test_login_redirects_home_where_the_user_is_greeted(client, ada):
    response = client.post("/login", {"email": "ada@example.com", "password": PASSWORD}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert b"Hello, ada!" in response.content


def test_login_follows_next_only_to_this_site(client, make_user):
    make_user(email="ada@example.com")

    local = client.post("/login", {"email": "ada@example.com", "password": PASSWORD, "next": "/api/me"})
    client.post("/logout")
    foreign = client.post("/login", {"email": "ada@example.com", "password": PASSWORD, "next": "https://evil.test/"})

    assert local["Location"] == "/api/me"
    assert foreign["Location"] == "/"


def test_logout_ends_the_session_in_redis(client, make_user, state_redis):
    make_user(email="ada@example.com")
    client.post("/login", {"email": "ada@example.com", "password": PASSWORD})
    session_key = keys.session(client.cookies[settings.SESSION_COOKIE_NAME].value)

    response = client.post("/logout", follow=True)

    assert b"You have been logged out." in response.content
    assert not state_redis.exists(session_key)


def test_logout_is_post_only_and_a_get_goes_home(client):
    assert client.get("/logout")["Location"] == "/"
    assert client.put("/logout").status_code == 405


def test_forms_are_refused_without_the_csrf_token(make_user):
    make_user(email="ada@example.com")
    browser = Client(enforce_csrf_checks=True)

    response = browser.post("/login", {"email": "ada@example.com", "password": PASSWORD})

    assert response.status_code == 403
    assert User.objects.count() == 1


def test_admin_is_for_staff_and_shows_the_job_queues(client, make_user):
    staff = make_user(is_staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)

    assert client.get("/admin/accounts/user/").status_code == 200
    assert client.get("/admin/rq/").status_code == 200


def test_job_dashboard_is_closed_to_non_staff(client, make_user):
    client.force_login(make_user())

    response = client.get("/admin/rq/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
