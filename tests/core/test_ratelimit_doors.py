"""Every door to a limited action, through the real views: the password doors (the
API's, the site's forms, the admin's) under the same log-in limits whatever the body's
type, and each site form in one budget with its API twin. A refused page gets an
HTML 429, a refused API call JSON; both carry Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from accounts import tokens
from posts.services import post_create

pytestmark = pytest.mark.django_db

WRONG = "not-the-password"
ACCOUNT_LIMIT = settings.KESTREL_RATE_LIMITS["auth_account"]["limit"]


def assert_refused_as_a_page(response) -> None:
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/html")
    assert response["Retry-After"] == "60"  # auth_account: 5 per 5 minutes, one more a minute
    assert b"Too many attempts" in response.content
    assert b"try again in 1 minute" in response.content


def assert_refused_as_json(response) -> None:
    assert response.status_code == 429
    assert response.json() == {"error": "Rate limit exceeded"}
    assert response["Retry-After"] == "60"


# --- The password doors -------------------------------------------------------------------

Door = Callable[[], object]


def password_doors(staff_ada) -> dict[str, tuple[Door, Callable]]:
    """Each door, as one wrong guess at Ada's password, and how it says no."""
    visitor = Client()
    json_api = APIClient()
    signed_in = APIClient()
    signed_in.force_login(staff_ada)
    admin = Client()
    admin.force_login(staff_ada)
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.token_pair_issue(user=staff_ada).access}")
    form = "application/x-www-form-urlencoded"
    return {
        # The site's form, multipart as the test client sends a dict, and url-encoded as browsers do.
        "site log-in, multipart": (
            lambda: visitor.post("/login", {"email": staff_ada.email, "password": WRONG}),
            assert_refused_as_a_page,
        ),
        "site log-in, url-encoded": (
            lambda: visitor.post("/login", f"email={staff_ada.email}&password={WRONG}", content_type=form),
            assert_refused_as_a_page,
        ),
        # The admin's form posts the email as "username".
        "admin log-in": (
            lambda: visitor.post("/admin/login/", {"username": staff_ada.email, "password": WRONG}),
            assert_refused_as_a_page,
        ),
        "site sign-up": (
            lambda: visitor.post("/signup", {"email": staff_ada.email, "username": "ada2", "password": WRONG}),
            assert_refused_as_a_page,
        ),
        "API log-in": (
            lambda: json_api.post("/api/login", {"email": staff_ada.email, "password": WRONG}, format="json"),
            assert_refused_as_json,
        ),
        "API log-in, url-encoded": (
            lambda: json_api.post("/api/login", f"email={staff_ada.email}&password={WRONG}", content_type=form),
            assert_refused_as_json,
        ),
        "API token": (
            lambda: json_api.post("/api/token", {"email": staff_ada.email, "password": WRONG}, format="json"),
            assert_refused_as_json,
        ),
        "API sign-up": (
            lambda: json_api.post(
                "/api/register", {"email": staff_ada.email, "username": "ada2", "password": WRONG}, format="json"
            ),
            assert_refused_as_json,
        ),
        "API password change, session": (
            lambda: signed_in.post("/api/password", {"old": WRONG, "new": "n3w-Strong-pass"}, format="json"),
            assert_refused_as_json,
        ),
        "API password change, bearer token": (
            lambda: bearer.post("/api/password", {"old": WRONG, "new": "n3w-Strong-pass"}, format="json"),
            assert_refused_as_json,
        ),
        "admin password change": (
            lambda: admin.post(
                "/admin/password_change/",
                {"old_password": WRONG, "new_password1": "n3w-Strong-pass", "new_password2": "n3w-Strong-pass"},
            ),
            assert_refused_as_a_page,
        ),
    }


DOOR_NAMES = [
    "site log-in, multipart",
    "site log-in, url-encoded",
    "admin log-in",
    "site sign-up",
    "API log-in",
    "API log-in, url-encoded",
    "API token",
    "API sign-up",
    "API password change, session",
    "API password change, bearer token",
    "admin password change",
]


@pytest.fixture
def staff_ada(make_user):
    # Staff, so that the admin's own password change is a door she can use.
    return make_user(email="ada@example.com", username="ada", is_staff=True)


@pytest.mark.parametrize("door", DOOR_NAMES)
def test_each_password_door_refuses_the_sixth_guess_at_one_account_with_429_and_retry_after(staff_ada, door):
    guess, assert_refused = password_doors(staff_ada)[door]

    allowed = [guess() for _ in range(ACCOUNT_LIMIT)]
    refused = guess()

    assert [r.status_code for r in allowed if r.status_code == 429] == []
    assert all('"auth_account";' in r["RateLimit"] for r in allowed)
    assert_refused(refused)


def test_guesses_at_one_account_through_different_doors_share_one_budget(staff_ada, bob):
    doors = password_doors(staff_ada)
    spread = [
        "site log-in, multipart",
        "admin log-in",
        "API token",
        "API password change, bearer token",
        "admin password change",
    ]

    allowed = [doors[name][0]() for name in spread]
    refused_elsewhere = [name for name, (guess, _) in doors.items() if guess().status_code == 429]
    someone_else = APIClient().post("/api/login", {"email": bob.email, "password": WRONG}, format="json")

    assert [r.status_code for r in allowed if r.status_code == 429] == []
    assert sorted(refused_elsewhere) == sorted(DOOR_NAMES)
    assert someone_else.status_code == 401


def test_a_password_change_counts_the_signed_in_person_not_an_account_the_body_names(staff_ada, bob):
    signed_in = APIClient()
    signed_in.force_login(staff_ada)

    for _ in range(ACCOUNT_LIMIT):
        signed_in.post("/api/password", {"old": WRONG, "new": "n3w-Strong-pass", "email": bob.email}, format="json")
    ada_again = APIClient().post("/api/login", {"email": staff_ada.email, "password": WRONG}, format="json")
    bob_still = APIClient().post("/api/login", {"email": bob.email, "password": WRONG}, format="json")

    assert ada_again.status_code == 429
    assert bob_still.status_code == 401


# --- Site forms and their API twins ---------------------------------------------------------


def counted(response, policy: str, remaining: int) -> bool:
    return f'"{policy}";r={remaining};' in response["RateLimit"]


def assert_limiter_refused(response, policy: str, *, page: bool) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert counted(response, policy, 0)
    if page:
        assert response["Content-Type"].startswith("text/html")
        assert b"Too many attempts" in response.content
    else:
        assert response.json() == {"error": "Rate limit exceeded"}


@pytest.fixture
def bob_both_doors(bob):
    """Bob signed in on the site (a browser) and on the API (a script)."""
    site, api = Client(), APIClient()
    site.force_login(bob)
    api.force_login(bob)
    return bob, site, api


def spend_alternately(site_request: Door, api_request: Door, policy: str) -> None:
    """Spend the whole of `policy`'s budget, every other request through each door."""
    limit = settings.KESTREL_RATE_LIMITS[policy]["limit"]
    for i in range(limit):
        response = (site_request if i % 2 else api_request)()
        assert counted(response, policy, limit - 1 - i), (i, response.status_code, response.get("RateLimit"))


def test_liking_on_the_site_and_through_the_api_share_one_budget(bob_both_doors, make_user):
    bob, site, api = bob_both_doors
    post = post_create(author=make_user(), title="Kestrels", content="They hover.")
    like_on_site = partial(site.post, f"/posts/{post.pk}/like", {"action": "like"})
    unlike_on_api = partial(api.delete, f"/api/posts/{post.pk}/like")

    spend_alternately(like_on_site, unlike_on_api, "writes")

    assert_limiter_refused(like_on_site(), "writes", page=True)
    assert_limiter_refused(api.post(f"/api/posts/{post.pk}/like"), "writes", page=False)


def test_following_on_the_site_and_through_the_api_share_one_budget(bob_both_doors, make_user):
    bob, site, api = bob_both_doors
    someone = make_user()
    follow_on_api = partial(api.post, f"/api/users/{someone.pk}/follow")
    unfollow_on_site = partial(site.post, f"/users/{someone.pk}/follow", {"action": "unfollow"})

    spend_alternately(unfollow_on_site, follow_on_api, "writes")

    assert_limiter_refused(unfollow_on_site(), "writes", page=True)
    assert_limiter_refused(follow_on_api(), "writes", page=False)


def test_posting_on_the_site_and_through_the_api_share_one_budget(bob_both_doors):
    bob, site, api = bob_both_doors
    on_site = partial(site.post, "/posts/new", {"title": "On the site", "content": "Hello."})
    on_api = partial(api.post, "/api/posts", {"title": "By API", "content": "Hello."}, format="json")

    spend_alternately(on_site, on_api, "writes")

    assert_limiter_refused(on_site(), "writes", page=True)
    assert_limiter_refused(on_api(), "writes", page=False)


def test_editing_a_profile_on_the_site_and_through_the_api_share_one_budget(bob_both_doors):
    bob, site, api = bob_both_doors
    on_site = partial(site.post, "/profile/edit", {"name": "Bob", "bio": "On the site."})
    on_api = partial(api.patch, f"/api/users/{bob.pk}", {"bio": "By API."}, format="json")

    spend_alternately(on_site, on_api, "writes")

    assert_limiter_refused(on_site(), "writes", page=True)
    assert_limiter_refused(on_api(), "writes", page=False)


def test_deleting_posts_on_the_site_and_through_the_api_share_one_budget(bob_both_doors, make_user):
    # Someone else's post: refused by the views (a message, a 403), counted all the same.
    bob, site, api = bob_both_doors
    post = post_create(author=make_user(), title="Not Bob's", content="Stays.")
    on_site = partial(site.post, f"/posts/{post.pk}/delete")
    on_api = partial(api.delete, f"/api/posts/{post.pk}")

    spend_alternately(on_site, on_api, "writes")

    assert_limiter_refused(on_site(), "writes", page=True)
    assert_limiter_refused(on_api(), "writes", page=False)
    assert api.get(f"/api/posts/{post.pk}").status_code == 200  # reading is not a write


def test_email_me_and_send_email_share_one_budget(bob_both_doors):
    bob, site, api = bob_both_doors
    on_site = partial(site.post, "/reports/email-me")
    on_api = partial(api.post, "/api/send-email", {"email": bob.email, "subject": "Hi"}, format="json")

    spend_alternately(on_site, on_api, "jobs")

    assert_limiter_refused(on_site(), "jobs", page=True)
    assert_limiter_refused(on_api(), "jobs", page=False)


def test_reports_on_the_site_and_through_the_api_share_one_budget(bob_both_doors):
    bob, site, api = bob_both_doors
    on_site = partial(site.post, "/reports/new")
    on_api = partial(api.post, "/api/reports")

    spend_alternately(on_site, on_api, "jobs")

    assert_limiter_refused(on_site(), "jobs", page=True)
    assert_limiter_refused(on_api(), "jobs", page=False)


def test_signing_up_on_the_site_and_through_the_api_share_the_log_in_budgets():
    site, api = Client(), APIClient()
    form = {"email": "new@example.com", "username": "new", "password": WRONG}

    allowed = [
        (site.post("/signup", form) if i % 2 else api.post("/api/register", form, format="json"))
        for i in range(ACCOUNT_LIMIT)
    ]

    assert [r.status_code for r in allowed if r.status_code == 429] == []
    assert_refused_as_a_page(site.post("/signup", form))
    assert_refused_as_json(api.post("/api/register", form, format="json"))
