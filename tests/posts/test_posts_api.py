"""The posts API: create, read (cached), edit and delete (author only), likes, profiles."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts import keys as account_keys
from posts import keys
from posts.models import Like, Post
from posts.services import post_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return post_create(author=ada, title="Hello", content="First post")


def test_creating_a_post_returns_201_with_the_post(as_ada, ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_ada.post("/api/posts", {"title": "Hi", "content": "There"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Hi"
    assert body["author"] == {"id": ada.pk, "username": "ada"}
    assert Post.objects.filter(pk=body["id"], author=ada).exists()


def test_creating_a_post_needs_a_login():
    response = APIClient().post("/api/posts", {"title": "Hi", "content": "There"}, format="json")

    assert response.status_code == 401
    assert not Post.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"content": "no title"}, "title"),
        ({"title": "no content"}, "content"),
        ({"title": "x" * 201, "content": "long title"}, "title"),
        ({"title": "long content", "content": "x" * 10_001}, "content"),
        ({"title": "   ", "content": "blank title"}, "title"),
        # Once coerced to "5" and "True": the schema says string, so these are client bugs.
        ({"title": 5, "content": "a number for a title"}, "title"),
        ({"title": "a flag for content", "content": True}, "content"),
    ],
)
def test_bad_posts_get_400_and_nothing_is_written(as_ada, payload, field):
    response = as_ada.post("/api/posts", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]
    assert not Post.objects.exists()


def test_reading_a_post_twice_makes_no_query_the_second_time(post, django_assert_num_queries):
    client = APIClient()
    first = client.get(f"/api/posts/{post.pk}")

    with django_assert_num_queries(0):
        second = client.get(f"/api/posts/{post.pk}")

    assert first.status_code == second.status_code == 200
    assert second.json()["title"] == "Hello"


def test_reading_a_post_counts_a_view(post):
    client = APIClient()

    client.get(f"/api/posts/{post.pk}")
    response = client.get(f"/api/posts/{post.pk}")

    assert response.json()["views"] == 2


def test_a_missing_post_is_a_cached_404(cache_redis, django_assert_num_queries):
    client = APIClient()
    first = client.get("/api/posts/999")

    with django_assert_num_queries(0):
        second = client.get("/api/posts/999")

    assert first.status_code == second.status_code == 404
    assert second.json() == {"error": "Post not found"}
    assert cache_redis.ttl(keys.post_detail(999)) <= keys.POST_MISSING_TTL * 1.1


@pytest.mark.parametrize("path", ["/api/posts/abc", "/api/posts/-1", "/api/posts/99999999999999999999999"])
def test_invalid_ids_are_404_not_500(path):
    response = APIClient().get(path)

    assert response.status_code == 404
    assert "error" in response.json()


def test_the_author_edits_and_everyone_sees_the_change_at_once(
    post, as_ada, django_capture_on_commit_callbacks, cache_redis
):
    APIClient().get(f"/api/posts/{post.pk}")  # cached
    assert cache_redis.exists(keys.post_detail(post.pk))

    with django_capture_on_commit_callbacks(execute=True):
        response = as_ada.patch(f"/api/posts/{post.pk}", {"title": "Edited"}, format="json")

    assert response.status_code == 200
    assert APIClient().get(f"/api/posts/{post.pk}").json()["title"] == "Edited"


def test_someone_else_cannot_edit_or_delete_a_post(post, as_bob):
    edit = as_bob.patch(f"/api/posts/{post.pk}", {"title": "Mine now"}, format="json")
    delete = as_bob.delete(f"/api/posts/{post.pk}")

    assert edit.status_code == delete.status_code == 403
    assert edit.json() == {"error": "Only the author can change this post."}
    post.refresh_from_db()
    assert post.title == "Hello"


def test_the_author_deletes_and_the_post_is_gone_everywhere(post, as_ada, django_capture_on_commit_callbacks):
    APIClient().get(f"/api/posts/{post.pk}")

    with django_capture_on_commit_callbacks(execute=True):
        response = as_ada.delete(f"/api/posts/{post.pk}")

    assert response.status_code == 204
    assert APIClient().get(f"/api/posts/{post.pk}").status_code == 404


def test_liking_twice_is_409_and_counts_once(post, as_bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = as_bob.post(f"/api/posts/{post.pk}/like")
        second = as_bob.post(f"/api/posts/{post.pk}/like")

    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json() == {"error": "You already like this post"}
    assert Like.objects.count() == 1
    assert APIClient().get(f"/api/posts/{post.pk}").json()["likeCount"] == 1


def test_unliking_removes_the_like_and_unliking_again_is_404(post, as_bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        as_bob.post(f"/api/posts/{post.pk}/like")
        first = as_bob.delete(f"/api/posts/{post.pk}/like")
        second = as_bob.delete(f"/api/posts/{post.pk}/like")

    assert first.status_code == 204
    assert second.status_code == 404
    post.refresh_from_db()
    assert post.like_count == 0


def test_nobody_likes_their_own_post(post, as_ada):
    response = as_ada.post(f"/api/posts/{post.pk}/like")

    assert response.status_code == 400
    assert not Like.objects.exists()


def test_user_profile_is_cached_and_edits_show_at_once(
    ada, as_ada, django_capture_on_commit_callbacks, django_assert_num_queries, cache_redis
):
    APIClient().get(f"/api/users/{ada.pk}")
    with django_assert_num_queries(0):
        cached = APIClient().get(f"/api/users/{ada.pk}")
    assert cache_redis.ttl(account_keys.user_profile(ada.pk)) > 0

    with django_capture_on_commit_callbacks(execute=True):
        edit = as_ada.patch(f"/api/users/{ada.pk}", {"name": "Ada L.", "bio": "Engines"}, format="json")

    assert cached.json()["username"] == "ada"
    assert "email" not in cached.json()
    assert edit.status_code == 200
    assert APIClient().get(f"/api/users/{ada.pk}").json()["name"] == "Ada L."


def test_only_the_owner_edits_a_profile(ada, as_bob):
    response = as_bob.patch(f"/api/users/{ada.pk}", {"bio": "hacked"}, format="json")

    assert response.status_code == 403
    ada.refresh_from_db()
    assert ada.bio == ""


def test_profile_fields_are_validated(ada, as_ada):
    response = as_ada.patch(f"/api/users/{ada.pk}", {"bio": "x" * 501}, format="json")

    assert response.status_code == 400
    assert "bio" in response.json()["details"]


def test_a_missing_user_is_404():
    assert APIClient().get("/api/users/424242").json() == {"error": "User not found"}
    assert APIClient().get("/api/users/424242/posts").status_code == 404


@pytest.mark.parametrize("query", ["count=1000", "count=5&count=6", "count=", "count=5.0", "count=%205", "count=1_0"])
def test_leaderboard_count_is_validated(query):
    response = APIClient().get(f"/api/leaderboard?{query}")

    assert response.status_code == 400
    assert "count" in response.json()["details"]


def test_leaderboard_shows_the_top_and_the_callers_rank(post, bob, as_bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        as_bob.post(f"/api/posts/{post.pk}/like")

    body = as_bob.get("/api/leaderboard?count=5").json()

    assert body["top"][0]["username"] == "ada"
    assert body["top"][0]["likes"] == 1
    assert body["me"] is None  # bob has received no likes
