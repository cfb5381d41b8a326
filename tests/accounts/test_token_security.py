"""Attacks on the token API and on other people's objects: every one refused, nothing written.

Forged tokens (alg=none, another algorithm, a wrong key, a tampered payload), tokens
that were genuine once (expired, revoked, of a deleted or deactivated user, of the
other type), and a genuine token of one person used against another's post or
profile, or with fields nobody may set (mass assignment).
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from posts.models import Post
from posts.services import post_create

pytestmark = pytest.mark.django_db

PASSWORD = "a-Strong-pass-42"


@pytest.fixture
def adas(ada) -> tokens.TokenPair:
    return tokens.token_pair_issue(user=ada)


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_refused(token: str, error: str = "Invalid token") -> None:
    response = bearer(token).get("/api/me")
    assert response.status_code == 403, response.content
    assert response.json() == {"error": error}


# --- Forged tokens --------------------------------------------------------------------------


def test_alg_none_is_refused(adas):
    payload = claims_of(adas.access)
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."

    assert_refused(unsigned)
    assert_refused(jwt.encode(payload, key=None, algorithm="none"))


def test_a_token_signed_with_another_key_is_refused(adas):
    payload = claims_of(adas.access)

    assert_refused(jwt.encode(payload, "x" * 64, algorithm="HS256"))
    # Not SECRET_KEY either: the signing key is derived from it, never it.
    assert_refused(jwt.encode(payload, settings.SECRET_KEY, algorithm="HS256"))


def test_another_algorithm_with_the_right_key_is_refused(adas):
    assert_refused(jwt.encode(claims_of(adas.access), settings.JWT_SIGNING_KEY, algorithm="HS512"))


def test_a_tampered_payload_is_refused(adas, bob):
    header, _, signature = adas.access.split(".")
    for change in ({"sub": str(bob.pk)}, {"epoch": 99}, {"exp": 4_000_000_000}, {"type": "access", "fam": "0" * 32}):
        forged = f"{header}.{b64({**claims_of(adas.access), **change})}.{signature}"
        assert_refused(forged)


@pytest.mark.parametrize(
    "garbage",
    ["abc", "a.b.c", "Bearer", "..", "eyJhbGciOiJIUzI1NiJ9.e30.", "x" * 5000, "tok en"],
)
def test_garbage_is_an_invalid_token_not_a_500(garbage):
    assert_refused(garbage)


def test_claims_of_the_wrong_shape_are_refused_even_if_signed(ada):
    good = claims_of(tokens.token_pair_issue(user=ada).access)
    for change in ({"sub": ada.pk}, {"sub": "1 OR 1=1"}, {"jti": "../../x"}, {"epoch": -1}, {"iat": True}):
        assert_refused(jwt.encode({**good, **change}, settings.JWT_SIGNING_KEY, algorithm="HS256"))
    missing = {k: v for k, v in good.items() if k != "epoch"}
    assert_refused(jwt.encode(missing, settings.JWT_SIGNING_KEY, algorithm="HS256"))


# --- Tokens that were genuine once ------------------------------------------------------------


def test_an_expired_token_is_refused(ada):
    stale = tokens.token_pair_issue(user=ada, now=time.time() - 301)

    assert_refused(stale.access)
    refreshed = APIClient().post("/api/token/refresh", {"refresh": stale.refresh}, format="json")
    assert refreshed.status_code == 200  # the refresh token lives a day


def test_a_revoked_token_is_refused(adas):
    bearer(adas.access).post("/api/logout")

    assert_refused(adas.access, "Token revoked")


def test_a_deleted_users_token_is_refused(ada, adas):
    ada.delete()

    assert_refused(adas.access)
    refreshed = APIClient().post("/api/token/refresh", {"refresh": adas.refresh}, format="json")
    assert refreshed.json() == {"error": "Invalid token"}


def test_a_deactivated_users_token_is_refused(ada, adas):
    User.objects.filter(pk=ada.pk).update(is_active=False)

    assert_refused(adas.access)


def test_a_refresh_token_is_not_an_access_token_and_vice_versa(adas):
    assert_refused(adas.refresh)
    refreshed = APIClient().post("/api/token/refresh", {"refresh": adas.access}, format="json")
    assert refreshed.status_code == 403
    assert refreshed.json() == {"error": "Invalid token"}


def test_a_bad_token_is_refused_even_beside_a_valid_session(as_ada):
    as_ada.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    response = as_ada.get("/api/me")

    assert response.status_code == 403
    assert response.json() == {"error": "Invalid token"}


def test_another_scheme_falls_through_to_the_session():
    response = APIClient().get("/api/me", HTTP_AUTHORIZATION="Basic YWRhOnB3")

    assert response.status_code == 401
    assert response.json() == {"error": "Not logged in"}


def test_logout_with_another_users_refresh_token_is_refused_and_revokes_nothing(ada, bob, adas):
    bobs = tokens.token_pair_issue(user=bob)

    response = bearer(adas.access).post("/api/logout", {"refresh": bobs.refresh}, format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "Invalid token"}
    assert bearer(adas.access).get("/api/me").status_code == 200
    assert bearer(bobs.access).get("/api/me").status_code == 200


# --- Other people's objects, with a genuine token --------------------------------------------


@pytest.fixture
def bobs_post(bob) -> Post:
    return post_create(author=bob, title="Bob's", content="Original")


def test_editing_or_deleting_someone_elses_post_is_403_and_writes_nothing(adas, bobs_post):
    api = bearer(adas.access)

    edit = api.patch(f"/api/posts/{bobs_post.pk}", {"title": "Hacked", "content": "Hacked"}, format="json")
    delete = api.delete(f"/api/posts/{bobs_post.pk}")

    assert (edit.status_code, delete.status_code) == (403, 403)
    bobs_post.refresh_from_db()
    assert (bobs_post.title, bobs_post.content) == ("Bob's", "Original")


def test_editing_someone_elses_profile_is_403_and_writes_nothing(adas, bob):
    response = bearer(adas.access).patch(f"/api/users/{bob.pk}", {"name": "Hacked", "bio": "Hacked"}, format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "You can only edit your own profile"}
    bob.refresh_from_db()
    assert (bob.name, bob.bio) == ("", "")


def test_mass_assignment_on_ones_own_profile_sets_only_the_profile(ada, adas, bob):
    response = bearer(adas.access).patch(
        f"/api/users/{ada.pk}",
        {
            "name": "Ada",
            "id": bob.pk,
            "is_staff": True,
            "isStaff": True,
            "is_superuser": True,
            "email": "mallory@example.com",
            "token_epoch": 0,
            "password": "x",
        },
        format="json",
    )

    assert response.status_code == 200
    ada_row = User.objects.get(pk=ada.pk)
    assert ada_row.name == "Ada"
    assert (ada_row.is_staff, ada_row.is_superuser, ada_row.email) == (False, False, "ada@example.com")
    assert ada_row.check_password(PASSWORD)
    assert User.objects.get(pk=bob.pk).name == ""
    assert User.objects.count() == 2


def test_mass_assignment_of_a_posts_author_is_ignored(ada, adas, bob):
    response = bearer(adas.access).post(
        "/api/posts",
        {"title": "Mine", "content": "Really", "author": bob.pk, "author_id": bob.pk, "authorId": bob.pk, "id": 999},
        format="json",
    )

    assert response.status_code == 201
    post = Post.objects.get()
    assert post.author_id == ada.pk
    assert not Post.objects.filter(author=bob).exists()


def test_a_token_never_lets_anyone_become_staff(ada, adas):
    response = bearer(adas.access).post("/api/notify", {"userId": ada.pk, "message": "hi"}, format="json")

    assert response.status_code == 403
