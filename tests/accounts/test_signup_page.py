"""The sign-up page names every problem in one round, states the password rules up front,
and the site's text fields show a character counter with their limit."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.password_validation import password_validators_help_texts
from django.test import override_settings
from django.utils.html import escape
from rest_framework.test import APIClient

from accounts.models import BIO_MAX_LENGTH, NAME_MAX_LENGTH, USERNAME_MAX_LENGTH, User
from posts.models import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


def described_by(page: str, field_id: str) -> list[str]:
    """The ids the control `field_id` names in its aria-describedby."""
    control = re.search(rf'<(?:input|textarea)[^>]*\bid="{field_id}"[^>]*>', page)
    assert control, f"no control #{field_id}"
    found = re.search(r'aria-describedby="([^"]*)"', control.group(0))
    return found.group(1).split() if found else []


def test_one_attempt_reports_the_taken_email_the_bad_username_and_the_short_password(client, ada):
    response = client.post("/signup", {"email": "ADA@example.com", "username": "no spaces!", "password": "kite7"})

    assert response.status_code == 400
    page = response.content.decode()
    errors = {
        field: re.search(rf'<div class="field-errors" id="id_{field}_error">(.*?)</div>', page, re.S)
        for field in ("email", "username", "password")
    }
    assert all(errors.values()), errors
    assert "already exists" in errors["email"].group(1)
    assert "Enter a valid username" in errors["username"].group(1)
    assert "too short" in errors["password"].group(1)
    assert 'value="ADA@example.com"' in page  # what was typed stays
    assert 'value="no spaces!"' in page
    assert "kite7" not in page  # but never the password
    assert User.objects.count() == 1  # Ada only: nothing written


def test_a_malformed_email_does_not_hide_a_taken_username_or_a_common_password(client, ada):
    response = client.post("/signup", {"email": "not-an-email", "username": "ADA", "password": "password123"})

    assert response.status_code == 400
    form = response.context["form"]
    assert form.errors["email"] == ["Enter a valid email address."]
    assert form.errors["username"] == ["A user with that username already exists."]
    assert "This password is too common." in form.errors["password"]
    assert User.objects.count() == 1


def test_a_password_like_the_username_is_refused_alongside_the_other_errors(client, ada):
    response = client.post(
        "/signup", {"email": "ada@example.com", "username": "kestrelwatcher", "password": "kestrelwatcher1"}
    )

    assert response.status_code == 400
    form = response.context["form"]
    assert form.errors["email"] == ["A user with that email already exists."]
    assert "The password is too similar to the username." in form.errors["password"]
    assert "username" not in form.errors


def test_the_password_rules_are_shown_before_the_first_attempt_and_describe_the_field(client):
    response = client.get("/signup")

    assert response.status_code == 200
    page = response.content.decode()
    rules = re.search(r'<div class="help muted" id="id_password_helptext">(.*?)</div>', page, re.S)
    assert rules
    texts = password_validators_help_texts()
    assert len(texts) == 4  # config.settings.AUTH_PASSWORD_VALIDATORS
    for text in texts:
        assert escape(text) in rules.group(1)
    assert "id_password_helptext" in described_by(page, "id_password")


@override_settings(
    AUTH_PASSWORD_VALIDATORS=[
        {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 14}}
    ]
)
def test_the_rules_shown_are_the_configured_validators(client):
    page = client.get("/signup").content.decode()

    assert "at least 14 characters" in page
    assert "commonly used password" not in page


def test_the_api_reports_every_problem_at_once_too(ada):
    api = APIClient()

    response = api.post(
        "/api/register", {"email": "ADA@example.com", "username": "no spaces!", "password": "kite7"}, format="json"
    )

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    assert set(body["details"]) == {"email", "username", "password"}
    assert body["details"]["email"] == ["A user with that email already exists."]
    assert any("too short" in message for message in body["details"]["password"])
    assert User.objects.count() == 1


def test_the_api_checks_the_other_fields_when_one_has_the_wrong_json_type(ada):
    response = APIClient().post("/api/register", {"email": 5, "password": "kite7"}, format="json")

    assert response.status_code == 400
    details = response.json()["details"]
    assert details["email"] == ["Must be a string."]
    assert details["username"] == ["This field is required."]
    assert any("too short" in message for message in details["password"])
    assert User.objects.count() == 1


def test_both_doors_give_the_same_messages(client, ada):
    # The same rules: the username's validator and the sign-up's own checks (accounts.services).
    values = {"email": "ada@example.com", "username": "no spaces!", "password": "12345678"}

    form = client.post("/signup", values).context["form"]
    api = APIClient().post("/api/register", values, format="json").json()["details"]

    assert {field: list(messages) for field, messages in form.errors.items()} == api


def test_counters_show_each_text_fields_limit_from_its_max_length(client, ada):
    client.force_login(ada)

    home = client.get("/").content.decode()
    profile = client.get(f"/users/{ada.pk}").content.decode()
    signup = APIClient().get("/signup").content.decode()

    for page, field, limit in [
        (home, "title", TITLE_MAX_LENGTH),
        (home, "content", CONTENT_MAX_LENGTH),
        (profile, "name", NAME_MAX_LENGTH),
        (profile, "bio", BIO_MAX_LENGTH),
        (signup, "username", USERNAME_MAX_LENGTH),
    ]:
        counter = re.search(
            rf'<small class="counter" id="id_{field}_counter"[^>]*data-max="(\d+)"[^>]*>(.*?)</small>', page
        )
        assert counter, field
        assert int(counter.group(1)) == limit
        assert f'<span class="counter-used">0</span>/{limit}' in counter.group(2)
        assert f"id_{field}_counter" in described_by(page, f"id_{field}")
    # An address or a password gets no counter.
    assert "id_email_counter" not in signup
    assert "id_password_counter" not in signup


def test_a_counter_counts_the_value_it_is_rendered_with_and_marks_it_over_the_limit(client, ada):
    client.force_login(ada)
    too_long = "t" * (TITLE_MAX_LENGTH + 1)

    page = client.post("/posts/new", {"title": too_long, "content": "one\r\ntwo"}).content.decode()

    assert (
        f'<small class="counter over" id="id_title_counter" data-counter-for="id_title" data-max="{TITLE_MAX_LENGTH}">'
        f'<span class="counter-used">{TITLE_MAX_LENGTH + 1}</span>' in page
    )
    # A line break counts twice, as the field's max_length counts it.
    assert '<span class="counter-used">8</span>' in page
    # The counter comes after the error in the description, which Django orders.
    assert described_by(page, "id_title") == ["id_title_error", "id_title_counter"]


def test_the_profile_counters_start_at_the_saved_values(client, make_user):
    wren = make_user(username="wren")
    User.objects.filter(pk=wren.pk).update(name="Wren", bio="Small and loud.")
    client.force_login(wren)

    page = client.get(f"/users/{wren.pk}").content.decode()

    assert f'<span class="counter-used">4</span>/{NAME_MAX_LENGTH}' in page
    assert f'<span class="counter-used">15</span>/{BIO_MAX_LENGTH}' in page
