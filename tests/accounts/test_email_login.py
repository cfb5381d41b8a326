"""Log-in is by email only, on every door, and a username can never look like an email
address: a handle spelled as someone's address must not lock them out of their account."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import user_create

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


@pytest.fixture
def staff_ada(make_user):
    return make_user(email="ada@example.com", username="ada", is_staff=True)


def log_in_everywhere(identifier: str, password: str = PASSWORD) -> dict[str, bool]:
    """Whether `identifier` and `password` log in, per door."""
    site, admin = Client(), Client()
    site.post("/login", {"email": identifier, "password": password})
    admin.post("/admin/login/", {"username": identifier, "password": password})
    api_login = APIClient().post("/api/login", {"email": identifier, "password": password}, format="json")
    token = APIClient().post("/api/token", {"email": identifier, "password": password}, format="json")
    return {
        "site": site.get("/api/me").status_code == 200,
        "admin": admin.get("/admin/").status_code == 200,
        "api log-in": api_login.status_code == 200,
        "api token": token.status_code == 200,
    }


# --- A username is never an email address ----------------------------------------------


def test_a_username_equal_to_someones_email_is_refused_by_every_way_to_make_one(bob, staff_ada):
    superuser = Client()
    User.objects.filter(pk=staff_ada.pk).update(is_superuser=True)
    superuser.force_login(staff_ada)
    squat = "bob@example.com"

    with pytest.raises(ValidationError) as service:
        user_create(email="eve@example.com", username=squat, password=PASSWORD)
    site = Client().post("/signup", {"email": "eve@example.com", "username": squat, "password": PASSWORD})
    api = APIClient().post(
        "/api/register", {"email": "eve@example.com", "username": squat, "password": PASSWORD}, format="json"
    )
    admin_add = superuser.post(
        "/admin/accounts/user/add/",
        {
            "email": "eve@example.com",
            "username": squat,
            "usable_password": "true",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
    )
    admin_change = superuser.post(
        f"/admin/accounts/user/{staff_ada.pk}/change/",
        {"username": squat, "email": staff_ada.email, "date_joined_0": "2025-01-01", "date_joined_1": "00:00:00"},
    )

    assert "username" in service.value.message_dict
    assert site.status_code == 400
    assert b"no @" in site.content
    assert api.status_code == 400
    assert "username" in api.json()["details"]
    assert admin_add.status_code == 200  # the form again, with its errors
    assert b"no @" in admin_add.content
    assert admin_change.status_code == 200
    assert b"no @" in admin_change.content
    assert not User.objects.filter(username__iexact=squat).exists()


# --- Log-in by email, and only by email ---------------------------------------------------


def test_a_person_whose_email_is_an_older_accounts_username_logs_in_by_email(make_user):
    # A handle from before usernames refused "@", on an older (lower id) row.
    User.objects.create_user(username="ada@example.com", email="squatter@example.com", password="squatters-pass-42")
    make_user(email="ada@example.com", username="ada", is_staff=True)

    assert log_in_everywhere("ada@example.com") == {"site": True, "admin": True, "api log-in": True, "api token": True}
    assert not any(log_in_everywhere("ada@example.com", "squatters-pass-42").values())


def test_a_username_no_longer_logs_in_anywhere(staff_ada):
    assert log_in_everywhere("ada") == {"site": False, "admin": False, "api log-in": False, "api token": False}
    assert all(log_in_everywhere("ADA@example.com").values())


def test_the_admin_log_in_form_asks_for_the_email(client):
    response = client.get("/admin/login/")

    assert b'<label for="id_username" class="required">Email:</label>' in response.content
    assert b'autocomplete="email"' in response.content
    assert b'maxlength="254"' in response.content
