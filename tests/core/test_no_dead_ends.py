"""No dead ends on the site: a GET on a POST-only address lands on the page with its
button, /favicon.ico answers, a person who is not staff meets a 403 page at /ops, and
the admin says Kestrel. The API keeps its JSON 405 and 403."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from posts.models import Like, Post
from posts.services import post_create
from tests.core.test_csp import assert_runs_under, directives

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(make_user):
    return make_user(username="ada")


@pytest.fixture
def as_ada(ada):
    client = Client()
    client.force_login(ada)
    return client


# --- POST-only doors -----------------------------------------------------------------


def doors(ada, post_id):
    """(POST-only address, the page with its button) for each site door."""
    return [
        ("/posts/new", "/"),
        (f"/posts/{post_id}/like", f"/posts/{post_id}"),
        (f"/posts/{post_id}/delete", f"/posts/{post_id}"),
        (f"/users/{ada.pk}/follow", f"/users/{ada.pk}"),
        ("/profile/edit", f"/users/{ada.pk}"),
        ("/reports/new", "/reports"),
        ("/reports/email-me", "/reports"),
        ("/logout", "/"),
    ]


def test_a_get_on_a_post_only_door_goes_to_the_page_with_the_button(ada, as_ada):
    post_id = post_create(author=ada, title="Hello", content="First post").pk

    for door, page in doors(ada, post_id):
        for method in (as_ada.get, as_ada.head):
            response = method(door)

            assert response.status_code == 302, door
            assert response["Location"] == page, door
        assert as_ada.get(door, follow=True).status_code == 200, door


def test_the_get_changes_nothing(ada, as_ada):
    post_id = post_create(author=ada, title="Hello", content="First post").pk

    as_ada.get(f"/posts/{post_id}/like")
    as_ada.get(f"/posts/{post_id}/delete")
    as_ada.get("/logout")

    assert Post.objects.filter(pk=post_id).exists()
    assert not Like.objects.filter(post_id=post_id).exists()
    assert b"Log out" in as_ada.get(f"/posts/{post_id}").content  # still logged in


def test_a_visitor_is_sent_to_the_page_too_and_logs_in_there_if_it_needs_it(client, ada):
    post_id = post_create(author=ada, title="Hello", content="First post").pk

    assert client.get(f"/posts/{post_id}/like")["Location"] == f"/posts/{post_id}"
    assert client.get("/profile/edit")["Location"] == "/"
    response = client.get("/reports/new", follow=True)
    assert response.redirect_chain[-1][0].startswith(reverse("login"))


def test_other_methods_are_still_refused_and_a_post_still_works(ada, as_ada):
    post_id = post_create(author=ada, title="Hello", content="First post").pk

    assert as_ada.put(f"/posts/{post_id}/like").status_code == 405
    assert as_ada.delete("/logout").status_code == 405
    assert as_ada.post(f"/posts/{post_id}/like")["Location"] == f"/posts/{post_id}"


def test_the_api_keeps_its_json_405(ada, as_ada):
    post_id = post_create(author=ada, title="Hello", content="First post").pk

    for url in ("/api/logout", "/api/send-email"):
        response = as_ada.get(url)
        assert response.status_code == 405, url
        assert response["Content-Type"] == "application/json", url
    assert as_ada.put(f"/api/posts/{post_id}/like").status_code == 405


# --- Favicon ---------------------------------------------------------------------------


def test_the_favicon_is_linked_and_served(client):
    home = client.get("/").content.decode()
    assert 'rel="icon" href="/static/favicon.svg" type="image/svg+xml"' in home

    response = client.get("/favicon.ico")

    assert response.status_code == 302
    assert response["Location"] == "/static/favicon.svg"
    svg = (settings.BASE_DIR / "static" / "favicon.svg").read_text()
    assert svg.startswith("<svg")
    assert "<script" not in svg


# --- 403 and 404 pages -------------------------------------------------------------------


def test_a_logged_in_person_who_is_not_staff_gets_the_403_page_at_ops(as_ada):
    response = as_ada.get(reverse("ops"))

    assert response.status_code == 403
    html = response.content.decode()
    assert "<h1>This page is for staff</h1>" in html
    assert f'href="{reverse("home")}"' in html
    assert 'class="skip-link" href="#main"' in html
    assert "@ada" in html  # the site's own page, navigation and all
    assert_runs_under(html, directives(response))


def test_staff_still_see_ops_and_visitors_are_sent_to_log_in(client, make_user):
    assert client.get(reverse("ops"))["Location"].startswith(reverse("login") + "?next=/ops")
    client.force_login(make_user(is_staff=True))
    assert client.get(reverse("ops")).status_code == 200


def test_the_404_page_is_the_sites_and_the_api_keeps_json(client):
    response = client.get("/no/such/page")

    assert response.status_code == 404
    html = response.content.decode()
    assert "<h1>Not found</h1>" in html
    assert 'href="/"' in html
    assert_runs_under(html, directives(response))
    api = client.get("/api/no/such/thing")
    assert api.status_code == 404
    assert api.json() == {"error": "Not found"}


def test_the_403_handler_answers_the_api_in_json(rf):
    from django.core.exceptions import PermissionDenied

    from core.views import json_handler403

    api = json_handler403(rf.get("/api/anything"), PermissionDenied())
    assert api.status_code == 403
    assert api["Content-Type"] == "application/json"


def test_the_500_page_has_a_way_home():
    from django.template.loader import render_to_string

    assert '<a href="/">Back to Kestrel</a>' in render_to_string("500.html")


# --- Admin ----------------------------------------------------------------------------------


def test_the_admin_says_kestrel_and_logs_in_by_email(client, make_user):
    login = client.get("/admin/login/").content.decode()
    assert "<title>Log in | Kestrel administration</title>" in login
    assert "Kestrel administration" in login
    assert "Django administration" not in login
    assert '<label for="id_username" class="required">Email:</label>' in login

    staff = make_user(is_staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    index = client.get("/admin/").content.decode()
    assert "Kestrel administration</h1>" in index
    assert "Site administration" not in index
