"""Timelines and activity pages read their posts and people from the object cache: a warm
page is one MGET and no query, and what a list shows stays as fresh as a post's own page."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import tokens
from core import cacheaside
from core.l1 import MISS, invalidation_channel
from core.redis import get_redis
from feeds.services import follow_create
from posts import keys as post_keys
from posts.counters import flush_all_views, flush_views, record_post_view
from posts.models import Post
from posts.selectors import home_timeline_page, user_activity_page
from posts.services import post_create, post_delete, post_like, post_update
from tests.posts.round_trips import recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_follows_ada(ada, bob, after_commit):
    with after_commit():
        follow_create(follower=bob, followee=ada)
    home_timeline_page(user_id=bob.pk)  # built, so fan-out appends to it


@pytest.fixture
def fifty_posts(ada, bob_follows_ada, after_commit) -> list[Post]:
    posts = []
    for n in range(50):
        with after_commit():
            posts.append(post_create(author=ada, title=f"post {n}", content="..."))
    return posts


@pytest.fixture
def as_bob_with_token(bob) -> APIClient:
    """Bob with a bearer token: no session to load, one round trip for limiter and denylist."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.token_pair_issue(user=bob).access}")
    return client


def post_queries(queries: CaptureQueriesContext) -> list[str]:
    table = Post._meta.db_table
    return [query["sql"] for query in queries.captured_queries if table in query["sql"]]


def titles(page: dict) -> list[str]:
    return [item["post"]["title"] for item in page["items"]]


def test_a_warm_feed_of_fifty_posts_queries_no_post_and_costs_two_round_trips(fifty_posts, as_bob_with_token, settings):
    settings.KESTREL_L1_ENABLED = False  # every post from Redis: the MGET is what is measured
    first = as_bob_with_token.get("/api/feed", {"count": 50})

    with CaptureQueriesContext(connection) as queries, recording() as trips:
        second = as_bob_with_token.get("/api/feed", {"count": 50})

    assert second.status_code == 200
    assert second.json() == first.json()
    assert titles(second.json()) == [f"post {n}" for n in reversed(range(50))]
    assert post_queries(queries) == []
    assert trips.names() == [
        ("state", "EVALSHA"),  # the request: rate limit and token denylist, one script
        ("state", "MULTI"),  # the feed: the timeline's EXISTS and XREVRANGE
        ("cache", "MGET"),  # the feed: its fifty posts
    ]


def l1_caught_up(timeout: float = 10.0) -> bool:
    """True once the L1's subscriber has handled every invalidation published so far: it
    handles them in order, so the last is a marker of our own, dropping an entry we put."""
    l1, marker = cacheaside.l1(), 10**12
    l1.cache.set(post_keys.post_detail(marker), {}, 60, time.time())
    get_redis("cache").publish(invalidation_channel(), json.dumps({"type": "post", "id": marker}))
    deadline = time.monotonic() + timeout
    while l1.cache.get(post_keys.post_detail(marker), time.time()) is not MISS:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_with_the_l1_listening_a_warm_feed_reads_no_post_from_redis(fifty_posts, as_bob_with_token):
    assert cacheaside.l1().wait_until_listening(10)
    assert l1_caught_up()  # the posts' own invalidations cannot drop what the next read fills
    as_bob_with_token.get("/api/feed", {"count": 50})

    with CaptureQueriesContext(connection) as queries, recording() as trips:
        response = as_bob_with_token.get("/api/feed", {"count": 50})

    assert len(response.json()["items"]) == 50
    assert post_queries(queries) == []
    assert trips.names() == [("state", "EVALSHA"), ("state", "MULTI")]


def test_a_cold_feed_loads_its_posts_in_one_query(fifty_posts, bob, cache_redis):
    cache_redis.delete(*[post_keys.post_detail(post.pk) for post in fifty_posts])

    with CaptureQueriesContext(connection) as queries:
        page = home_timeline_page(user_id=bob.pk, count=50)

    assert len(page["items"]) == 50
    assert len(post_queries(queries)) == 1


def test_a_like_shows_in_the_feed_at_once(ada, bob, make_user, bob_follows_ada, after_commit):
    with after_commit():
        post = post_create(author=ada, title="liked", content="...")
    assert home_timeline_page(user_id=bob.pk)["items"][0]["post"]["likeCount"] == 0

    with after_commit():
        post_like(post=post, user=make_user())

    assert home_timeline_page(user_id=bob.pk)["items"][0]["post"]["likeCount"] == 1


def test_flushed_views_show_in_the_feed(ada, bob, bob_follows_ada, after_commit):
    with after_commit():
        post = post_create(author=ada, title="viewed", content="...")
    home_timeline_page(user_id=bob.pk)
    record_post_view(post_id=post.pk, viewer="someone")
    flush_views()  # from this process's memory to Redis, as its sending thread does

    with after_commit():
        flush_all_views()

    assert home_timeline_page(user_id=bob.pk)["items"][0]["post"]["viewCount"] == 1


def test_an_edit_and_a_delete_show_in_a_cached_feed(ada, bob, bob_follows_ada, after_commit):
    with after_commit():
        kept = post_create(author=ada, title="draft", content="...")
    with after_commit():
        gone = post_create(author=ada, title="gone", content="...")
    assert titles(home_timeline_page(user_id=bob.pk)) == ["gone", "draft"]

    with after_commit():
        post_update(post=kept, editor=ada, title="final")
    with after_commit():
        post_delete(post=gone, editor=ada)

    assert titles(home_timeline_page(user_id=bob.pk)) == ["final"]


# --- Activity pages ----------------------------------------------------------------------------


def test_a_warm_activity_page_makes_no_query(ada, bob, after_commit, django_assert_num_queries, settings):
    settings.KESTREL_L1_ENABLED = False
    with after_commit():
        post = post_create(author=ada, title="Hello", content="...")
    with after_commit():
        post_like(post=post, user=bob)
    with after_commit():
        follow_create(follower=bob, followee=ada)
    first = user_activity_page(user_id=bob.pk)

    with django_assert_num_queries(0), recording() as trips:
        second = user_activity_page(user_id=bob.pk)

    assert second == first
    assert [item["action"] for item in second["items"]] == ["followed", "liked"]
    # The stream, then the liked post's entry and the followed person's profile.
    assert trips.names() == [("state", "XREVRANGE"), ("cache", "MGET"), ("cache", "MGET")]


def test_activity_about_a_deactivated_person_is_hidden(ada, bob, after_commit):
    with after_commit():
        follow_create(follower=bob, followee=ada)
    assert len(user_activity_page(user_id=bob.pk)["items"]) == 1

    ada.is_active = False
    with after_commit():
        ada.save()

    assert user_activity_page(user_id=bob.pk)["items"] == []
