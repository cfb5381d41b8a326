"""Every way a password changes ends the person's tokens and sessions, exactly once:
the API, the admin, `manage.py changepassword`, and a shell's set_password() and save()."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from accounts.services import user_tokens_revoke_all

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"
NEW_PASSWORD = "a-New-strong-pass-43"


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def changepassword(user: User, monkeypatch) -> None:
    # The command reads the new password twice from the terminal.
    monkeypatch.setattr("getpass.getpass", lambda prompt="": NEW_PASSWORD)
    call_command("changepassword", user.username, stdout=io.StringIO())


def test_changepassword_ends_the_tokens_issued_before(ada, monkeypatch, django_capture_on_commit_callbacks):
    before = tokens.token_pair_issue(user=ada)
    session = signed_in(ada)

    with django_capture_on_commit_callbacks(execute=True):
        changepassword(ada, monkeypatch)

    response = bearer(before.access).get("/api/me")
    assert response.status_code == 403
    assert response.json() == {"error": "Token revoked"}
    refreshed = APIClient().post("/api/token/refresh", {"refresh": before.refresh}, format="json")
    assert refreshed.status_code == 403
    assert session.get("/api/me").status_code == 401
    after = APIClient().post("/api/token", {"email": ada.email, "password": NEW_PASSWORD}, format="json")
    assert bearer(after.json()["access"]).get("/api/me").status_code == 200


def _api(user: User, monkeypatch) -> None:
    client = APIClient()
    client.force_login(user)
    response = client.post("/api/password", {"old": PASSWORD, "new": NEW_PASSWORD}, format="json")
    assert response.status_code == 200, response.content


def _admin(user: User, monkeypatch) -> None:
    superuser = User.objects.create_superuser(username="root", email="root@example.com", password=PASSWORD)
    response = signed_in(superuser).post(
        f"/admin/accounts/user/{user.pk}/password/",
        {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302, response.content


def _shell(user: User, monkeypatch) -> None:
    user = User.objects.get(pk=user.pk)
    user.set_password(NEW_PASSWORD)
    user.save()


def _shell_unusable(user: User, monkeypatch) -> None:
    user = User.objects.get(pk=user.pk)
    user.set_unusable_password()
    user.save()


DOORS: dict[str, Callable] = {
    "api": _api,
    "admin": _admin,
    "changepassword": changepassword,
    "shell": _shell,
    "shell, unusable password": _shell_unusable,
}


def test_every_way_to_change_a_password_ends_tokens_and_bumps_the_epoch_exactly_once(
    make_user, monkeypatch, django_capture_on_commit_callbacks
):
    for n, (door, change) in enumerate(DOORS.items()):
        person = make_user(email=f"p{n}@example.com", username=f"p{n}")
        assert person.token_epoch == 0  # a new account starts with nothing to end
        before = tokens.token_pair_issue(user=person)

        with django_capture_on_commit_callbacks(execute=True):
            change(person, monkeypatch)

        assert User.objects.get(pk=person.pk).token_epoch == 1, door
        assert bearer(before.access).get("/api/me").status_code == 403, door


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1  # the suite hashes with MD5; this only needs to be a different hasher


def test_only_the_save_that_writes_a_new_password_ends_the_tokens(ada, settings):
    ada.set_password(NEW_PASSWORD)
    ada.save(update_fields=["name"])  # the new password is not written
    ada.name = "Ada"
    ada.save()  # now it is
    ada.save()  # and this one writes it again, unchanged
    # A log-in that re-hashes the same password under a newer hasher changes nothing.
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2", *settings.PASSWORD_HASHERS]
    token = tokens.token_pair_issue(user=User.objects.get(pk=ada.pk))
    logged_in = APIClient().post("/api/login", {"email": ada.email, "password": NEW_PASSWORD}, format="json")

    assert logged_in.status_code == 200
    assert User.objects.get(pk=ada.pk).password.startswith("pbkdf2_sha256$1$")
    assert User.objects.get(pk=ada.pk).token_epoch == 1
    assert bearer(token.access).get("/api/me").status_code == 200


def test_a_password_changed_on_a_stale_copy_still_ends_every_token(ada):
    stale = User.objects.get(pk=ada.pk)  # loaded before the log-outs below
    for _ in range(3):
        user_tokens_revoke_all(user=ada)  # /api/logout-all, three times
    latest = tokens.token_pair_issue(user=ada)

    stale.set_password(NEW_PASSWORD)
    stale.save()

    assert User.objects.get(pk=ada.pk).token_epoch == 4
    assert bearer(latest.access).get("/api/me").status_code == 403
