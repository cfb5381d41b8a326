"""The site's post, profile and leaderboard pages, and the demo data."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import Follow
from posts.counters import flush_views
from posts.models import Like, Page, Post
from posts.services import post_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return post_create(author=ada, title="Hello page", content="Body text")


def test_composing_on_the_home_page_creates_a_post(client, ada, django_capture_on_commit_callbacks):
    client.force_login(ada)
    assert b'action="/posts/new"' in client.get("/").content

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/posts/new", {"title": "From the site", "content": "Hi"}, follow=True)

    assert response.status_code == 200
    assert b"From the site" in response.content
    assert Post.objects.filter(author=ada, title="From the site").exists()


def test_a_bad_compose_shows_the_error_and_writes_nothing(client, ada):
    client.force_login(ada)

    response = client.post("/posts/new", {"title": "x" * 201, "content": "Hi"}, follow=True)

    assert b"at most 200 characters" in response.content
    assert not Post.objects.exists()


def test_the_post_page_counts_views(client, post):
    client.get(f"/posts/{post.pk}")
    flush_views()  # the unique viewers are read from Redis: as of the last send
    response = client.get(f"/posts/{post.pk}")

    assert response.status_code == 200
    assert b"Hello page" in response.content
    assert b"2 views" in response.content
    assert b"~1 viewer" in response.content


def test_liking_from_the_post_page(client, post, make_user, django_capture_on_commit_callbacks):
    client.force_login(make_user())

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/posts/{post.pk}/like")
    response = client.get(f"/posts/{post.pk}")

    assert b"1 like" in response.content
    assert b"Unlike" in response.content
    assert Like.objects.filter(post=post).count() == 1


def test_the_profile_page_lists_recent_posts_and_stats(client, ada, post):
    response = client.get(f"/users/{ada.pk}")

    assert response.status_code == 200
    assert b"Hello page" in response.content
    assert b"1 post" in response.content


def test_the_owner_edits_the_profile_from_the_page(client, ada, django_capture_on_commit_callbacks):
    client.force_login(ada)
    client.get(f"/users/{ada.pk}")  # cached

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/profile/edit", {"name": "Ada Lovelace", "bio": "Notes on engines"})
    response = client.get(f"/users/{ada.pk}")

    assert b"Ada Lovelace" in response.content
    assert b"Notes on engines" in response.content


def test_the_leaderboard_page_ranks_people(client, post, make_user, django_capture_on_commit_callbacks):
    fan = make_user()
    client.force_login(fan)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/posts/{post.pk}/like")

    response = client.get("/leaderboard")

    assert response.status_code == 200
    assert b"@ada" in response.content
    assert b"You are not on the board yet" in response.content


def test_a_missing_post_page_is_404(client):
    assert client.get("/posts/424242").status_code == 404


def test_the_demo_data_loads_twice_without_duplicates(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
        call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert Page.objects.filter(slug="about").count() == 1
    assert Like.objects.count() == 3
    assert Follow.objects.count() == 5
