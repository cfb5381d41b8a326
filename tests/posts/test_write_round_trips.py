"""What a write costs in Redis round trips, after-commit work included, and that it drops
only the cached copies it changed."""

from __future__ import annotations

import pytest

from accounts.models import Follow
from core.models import PendingInvalidation
from feeds import keys as feed_keys
from feeds.notifications import notification_list
from posts import keys
from posts.models import Post
from posts.selectors import home_timeline_page, post_detail, user_recent_posts, user_stats
from posts.services import post_create, post_like, post_unlike, post_update
from tests.posts.round_trips import recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def fans(ada, make_user):
    """A hundred followers of Ada (the most a post fans out to inline), timelines built."""
    people = [make_user() for _ in range(100)]
    Follow.objects.bulk_create([Follow(follower=person, followee=ada) for person in people])
    for person in people:
        home_timeline_page(user_id=person.pk)
    return people


def test_a_new_post_to_a_hundred_followers_costs_two_round_trips(ada, fans, after_commit, state_redis):
    with after_commit():
        post_create(author=ada, title="warm-up", content="...")  # pools connected, list and stats built
    user_recent_posts(user_id=ada.pk)

    with recording() as trips, after_commit():
        post = post_create(author=ada, title="Hello", content="...")

    assert trips.names() == [
        # The author's list and stats written through, a 404 cached for the id dropped.
        ("cache", "MULTI"),
        # The author's activity, a hundred timelines and a hundred notifications.
        ("state", "PIPELINE"),
    ]
    assert "SCRIPT EXISTS" not in trips.commands()
    assert [entry["title"] for entry in user_recent_posts(user_id=ada.pk)][:2] == ["Hello", "warm-up"]
    assert all(home_timeline_page(user_id=fan.pk)["items"][0]["post"]["id"] == post.pk for fan in fans)
    assert all(state_redis.xlen(feed_keys.user_notifications(fan.pk)) == 2 for fan in fans)


def test_a_like_costs_two_round_trips_and_an_unlike_one(ada, bob, after_commit):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    with after_commit():
        post_like(post=post, user=bob)  # the scripts loaded, the pools connected
    with after_commit():
        post_unlike(post=post, user=bob)

    with recording() as liked, after_commit():
        post_like(post=post, user=bob)
    with recording() as unliked, after_commit():
        post_unlike(post=post, user=bob)

    # Cache: the post's entry (likeCount changed), the author's likesReceived and the
    # leaderboard. State: the liker's activity and the author's notification (once an hour).
    assert liked.names() == [("cache", "PIPELINE"), ("state", "PIPELINE")]
    assert unliked.names() == [("cache", "PIPELINE")]


def test_a_like_drops_the_cached_post_and_moves_the_authors_stats(ada, bob, after_commit):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    assert post_detail(post_id=post.pk)["likeCount"] == 0
    assert user_stats(user_id=ada.pk)["likesReceived"] == 0

    with after_commit():
        post_like(post=post, user=bob)

    assert post_detail(post_id=post.pk)["likeCount"] == 1
    assert user_stats(user_id=ada.pk)["likesReceived"] == 1
    assert [n["kind"] for n in notification_list(user_id=ada.pk)["notifications"]] == ["like"]


def test_a_like_notifies_even_after_the_server_forgot_its_scripts(ada, bob, after_commit, state_redis):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    state_redis.script_flush()

    with after_commit():
        post_like(post=post, user=bob)

    assert [n["kind"] for n in notification_list(user_id=ada.pk)["notifications"]] == ["like"]


def test_a_like_with_redis_away_commits_and_queues_its_invalidations(ada, bob, after_commit, redis_server):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")

    redis_server.stop()
    try:
        with after_commit():
            post_like(post=post, user=bob)
    finally:
        redis_server.start()

    post.refresh_from_db()
    assert post.like_count == 1
    queued = set(PendingInvalidation.objects.values_list("family", "obj_id"))
    assert queued == {("post", str(post.pk)), ("user_posts", str(ada.pk))}


def test_a_post_created_outside_the_service_reaches_its_authors_list(ada, after_commit):
    with after_commit():
        post_create(author=ada, title="first", content="...")
    assert [entry["title"] for entry in user_recent_posts(user_id=ada.pk)] == ["first"]

    with after_commit():
        Post.objects.create(author=ada, title="from a shell", content="...")

    assert [entry["title"] for entry in user_recent_posts(user_id=ada.pk)] == ["from a shell", "first"]


# --- Edits drop only what they changed --------------------------------------------------------


@pytest.fixture
def cached_post(ada, after_commit):
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    post_detail(post_id=post.pk)
    user_recent_posts(user_id=ada.pk)
    return post


def test_an_edit_that_changes_nothing_writes_and_drops_nothing(
    ada, cached_post, cache_redis, django_assert_num_queries, django_capture_on_commit_callbacks
):
    updated_at = cached_post.updated_at

    with django_assert_num_queries(0), django_capture_on_commit_callbacks() as callbacks:
        post_update(post=cached_post, editor=ada, title=" Hello ", content="...")

    assert callbacks == []
    assert cache_redis.exists(keys.post_detail(cached_post.pk))
    assert Post.objects.get(pk=cached_post.pk).updated_at == updated_at


def test_a_new_content_drops_the_post_but_not_its_authors_list(ada, cached_post, cache_redis, after_commit):
    with after_commit():
        post_update(post=cached_post, editor=ada, content="Changed")

    assert not cache_redis.exists(keys.post_detail(cached_post.pk))
    assert cache_redis.exists(keys.user_posts_recent(ada.pk))
    assert post_detail(post_id=cached_post.pk)["content"] == "Changed"


def test_a_new_title_drops_the_post_and_its_authors_list(ada, cached_post, cache_redis, after_commit):
    with after_commit():
        post_update(post=cached_post, editor=ada, title="Renamed")

    assert not cache_redis.exists(keys.post_detail(cached_post.pk))
    assert not cache_redis.exists(keys.user_posts_stats(ada.pk))  # the list's marker: rebuilt on read
    assert [entry["title"] for entry in user_recent_posts(user_id=ada.pk)] == ["Renamed"]
