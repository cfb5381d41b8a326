"""Home timelines: fan-out on write to followers' streams (inline, or a job for a popular
author), GET /api/feed and the home page, cursor pages, trimming, rebuilds, deletes."""

from __future__ import annotations

import django_rq
import pytest
from rest_framework.test import APIClient

from feeds import keys, selectors, services
from feeds.services import follow_create, follow_delete
from jobs.models import Job
from jobs.queues import FANOUT_JOB
from posts.models import Post
from posts.selectors import home_timeline_page, post_with_author
from posts.services import post_create, post_delete
from tests.clients import queued

pytestmark = pytest.mark.django_db


@pytest.fixture
def notified(monkeypatch):
    """The notifications the fan-out makes, one record per user (still delivered for real)."""
    calls: list[dict] = []
    real_once, real_queue = services.notification_queue_once, services.notifications_queue

    def spy_once(pipe, **kwargs):
        calls.append(kwargs)
        return real_once(pipe, **kwargs)

    def spy_queue(pipe, *, user_ids, **kwargs):
        calls.extend({"user_id": user_id, **kwargs} for user_id in user_ids)
        return real_queue(pipe, user_ids=user_ids, **kwargs)

    monkeypatch.setattr(services, "notification_queue_once", spy_once)
    monkeypatch.setattr(services, "notifications_queue", spy_queue)
    return calls


@pytest.fixture
def publish(django_capture_on_commit_callbacks):
    def publish(author, title: str) -> Post:
        with django_capture_on_commit_callbacks(execute=True):
            return post_create(author=author, title=title, content=f"About {title}")

    return publish


@pytest.fixture
def follow(django_capture_on_commit_callbacks):
    def follow(follower, followee) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            follow_create(follower=follower, followee=followee)
        # A follow drops the follower's timeline; reading it builds it again, so that
        # the fan-out of the next post has a stream to append to.
        home_timeline_page(user_id=follower.pk)

    return follow


def titles(page: dict) -> list[str]:
    return [item["post"]["title"] for item in page["items"]]


def feed(user) -> list[str]:
    return titles(home_timeline_page(user_id=user.pk))


# --- Fan-out -------------------------------------------------------------------------------


def test_a_new_post_reaches_each_followers_timeline_after_commit(
    ada, bob, make_user, follow, notified, state_redis, django_capture_on_commit_callbacks
):
    carol, dave = make_user(username="carol"), make_user(username="dave")
    follow(bob, ada)
    follow(carol, ada)
    home_timeline_page(user_id=dave.pk)

    with django_capture_on_commit_callbacks() as callbacks:
        post = post_create(author=ada, title="Hello", content="...")
        assert state_redis.xlen(keys.user_timeline(bob.pk)) == 0  # nothing before commit
    for callback in callbacks:
        callback()

    for follower in (bob, carol):
        [(_, fields)] = state_redis.xrange(keys.user_timeline(follower.pk))
        assert fields == {b"post": str(post.pk).encode(), b"author": str(ada.pk).encode()}
    assert state_redis.xlen(keys.user_timeline(dave.pk)) == 0  # dave follows nobody
    posted = [n for n in notified if n["kind"] == "post"]
    assert sorted(n["user_id"] for n in posted) == sorted([bob.pk, carol.pk])
    assert posted[0]["data"] == {"postId": post.pk, "userId": ada.pk}


def test_the_feed_api_shows_posts_by_people_you_follow_newest_first(ada, bob, make_user, as_bob, follow, publish):
    carol = make_user(username="carol")
    follow(bob, ada)
    publish(ada, "first")
    publish(carol, "not followed")
    publish(ada, "second")

    response = as_bob.get("/api/feed")

    assert response.status_code == 200
    body = response.json()
    assert titles(body) == ["second", "first"]
    assert body["items"][0]["post"]["author"] == {"id": ada.pk, "username": "ada"}
    assert body["next"] is None


def test_the_feed_needs_a_login():
    assert APIClient().get("/api/feed").status_code == 401


def test_a_timeline_does_not_hold_your_own_posts(ada, bob, follow, publish):
    follow(bob, ada)
    home_timeline_page(user_id=ada.pk)

    publish(ada, "mine")

    assert feed(ada) == []
    assert feed(bob) == ["mine"]


def test_unfollowing_stops_new_posts_reaching_the_timeline(
    ada, bob, follow, publish, state_redis, django_capture_on_commit_callbacks
):
    follow(bob, ada)
    publish(ada, "while following")
    with django_capture_on_commit_callbacks(execute=True):
        follow_delete(follower=bob, followee=ada)
    home_timeline_page(user_id=bob.pk)

    publish(ada, "after unfollowing")

    assert state_redis.xlen(keys.user_timeline(bob.pk)) == 0
    # The unfollow dropped the timeline, so its rebuild left out the earlier post too.
    assert feed(bob) == []


def test_following_someone_brings_their_earlier_posts_into_the_timeline(ada, bob, follow, publish):
    home_timeline_page(user_id=bob.pk)  # built, empty
    publish(ada, "before the follow")

    follow(bob, ada)

    assert feed(bob) == ["before the follow"]


def test_a_popular_authors_post_fans_out_in_a_job(
    ada, make_user, follow, notified, state_redis, run_jobs, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(services, "FANOUT_INLINE_MAX_FOLLOWERS", 2)
    monkeypatch.setattr(services, "FANOUT_BATCH", 2)  # three followers: two pipelines
    fans = [make_user() for _ in range(3)]
    for fan in fans:
        follow(fan, ada)

    with django_capture_on_commit_callbacks(execute=True):
        post = post_create(author=ada, title="Big news", content="...")

    job = Job.objects.get(kind=FANOUT_JOB)
    assert job.payload == {"postId": post.pk}
    assert django_rq.get_queue("default").get_job_ids() == [str(job.pk)]  # pushed after commit
    assert all(state_redis.xlen(keys.user_timeline(fan.pk)) == 0 for fan in fans)  # the request did not wait
    assert state_redis.xlen(keys.user_activity(ada.pk)) == 1  # the author's own line did not wait either

    run_jobs("default")

    assert all(feed(fan) == ["Big news"] for fan in fans)
    assert sorted(n["user_id"] for n in notified if n["kind"] == "post") == sorted(fan.pk for fan in fans)
    job.refresh_from_db()
    assert job.completed_at is not None
    assert job.result == {"postId": post.pk, "timelines": 3}


def test_a_small_fanout_stays_in_the_request(ada, bob, follow, publish):
    follow(bob, ada)

    publish(ada, "quick")

    assert not Job.objects.filter(kind=FANOUT_JOB).exists()
    assert feed(bob) == ["quick"]


def test_fanout_sends_one_pipeline_per_batch_of_followers(ada, make_user, monkeypatch, state_redis):
    from core.redis import get_redis

    fans = [make_user() for _ in range(5)]
    for fan in fans:
        home_timeline_page(user_id=fan.pk)
    post = Post.objects.create(author=ada, title="t", content="c")
    client = get_redis("state")
    real_pipeline = client.pipeline
    sizes: list[int] = []

    def counting_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **kw):
            sizes.append(queued(pipe))
            return real_execute(*a, **kw)

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(client, "pipeline", counting_pipeline)

    written = services.timeline_fanout(post=post, batches=[[f.pk for f in fans[:3]], [f.pk for f in fans[3:]]])

    assert written == 5
    # Per batch, one round trip: each follower's XADD and the DEL of its rebuild lease,
    # then the notify script's SCRIPT LOAD and the batch's notifications (one call each).
    assert sizes == [10, 7]
    assert [state_redis.xlen(keys.user_notifications(fan.pk)) for fan in fans] == [1] * 5


def test_the_fanout_job_acts_once_per_job_row(ada, bob, follow, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "FANOUT_INLINE_MAX_FOLLOWERS", 0)
    follow(bob, ada)
    with django_capture_on_commit_callbacks(execute=True):
        post_create(author=ada, title="once", content="...")
    job = Job.objects.get(kind=FANOUT_JOB)

    first = services.timeline_fanout_run(job=job, post_load=post_with_author)
    job.refresh_from_db()
    again = services.timeline_fanout_run(job=job, post_load=post_with_author)  # RQ ran it a second time

    assert again == first
    assert feed(bob) == ["once"]
    assert len(home_timeline_page(user_id=bob.pk)["items"]) == 1


def test_a_fanout_job_for_a_deleted_post_does_nothing(
    ada, bob, follow, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(services, "FANOUT_INLINE_MAX_FOLLOWERS", 0)
    follow(bob, ada)
    with django_capture_on_commit_callbacks(execute=True):
        post = post_create(author=ada, title="gone", content="...")
        post_delete(post=post, editor=ada)

    result = services.timeline_fanout_run(job=Job.objects.get(kind=FANOUT_JOB), post_load=post_with_author)

    assert result["timelines"] == 0
    assert result["skipped"] == "post deleted"


# --- Pages and cursors -------------------------------------------------------------------------


def test_pages_by_cursor_are_disjoint_and_in_order(ada, bob, as_bob, follow, publish):
    follow(bob, ada)
    for n in range(5):
        publish(ada, f"post {n}")

    pages, before = [], None
    while True:
        query = {"count": 2} if before is None else {"count": 2, "before": before}
        body = as_bob.get("/api/feed", query).json()
        pages.append(titles(body))
        before = body["next"]
        if before is None:
            break

    assert pages == [["post 4", "post 3"], ["post 2", "post 1"], ["post 0"]]


def test_a_rebuilt_timeline_pages_the_same_way(ada, bob, as_bob, follow, publish, state_redis):
    follow(bob, ada)
    for n in range(3):
        publish(ada, f"post {n}")
    state_redis.delete(keys.user_timeline(bob.pk))

    first = as_bob.get("/api/feed", {"count": 2}).json()
    second = as_bob.get("/api/feed", {"count": 2, "before": first["next"]}).json()

    assert titles(first) == ["post 2", "post 1"]
    assert titles(second) == ["post 0"]
    assert second["next"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"before": "yesterday"}, "before"),
        ({"before": "12-"}, "before"),
        ({"before": "1-2-3"}, "before"),
        ({"before": f"{2**64}-0"}, "before"),
        ({"before": "\u0661-\u0660"}, "before"),
        ({"before": " 1-0"}, "before"),
        ({"count": 0}, "count"),
        ({"count": 101}, "count"),
        ({"count": "many"}, "count"),
    ],
)
def test_a_bad_cursor_or_count_is_400_with_details(as_bob, query, field):
    response = as_bob.get("/api/feed", query)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    assert list(body["details"]) == [field]


def test_the_oldest_possible_cursor_is_an_empty_page(as_bob):
    response = as_bob.get("/api/feed", {"before": "0-0"})

    assert response.status_code == 200
    assert response.json() == {"items": [], "next": None}


# --- Trimming, rebuilding, deleting ------------------------------------------------------------


def test_a_timeline_is_trimmed_to_about_maxlen(ada, bob, state_redis, monkeypatch):
    monkeypatch.setattr(keys, "STREAM_MAXLEN", 10)
    home_timeline_page(user_id=bob.pk)
    post = Post.objects.create(author=ada, title="t", content="c")

    for _ in range(250):
        services.timeline_fanout(post=post, batches=[[bob.pk]])

    # MAXLEN ~ trims whole macro-nodes (100 entries each by default), never below 10.
    assert 10 <= state_redis.xlen(keys.user_timeline(bob.pk)) <= 10 + 100


def test_a_deleted_timeline_is_rebuilt_from_the_database(ada, bob, follow, publish, state_redis):
    follow(bob, ada)
    publish(ada, "one")
    publish(ada, "two")
    state_redis.delete(keys.user_timeline(bob.pk))

    assert feed(bob) == ["two", "one"]

    assert state_redis.xlen(keys.user_timeline(bob.pk)) == 2
    assert [fields[b"post"] for _, fields in state_redis.xrevrange(keys.user_timeline(bob.pk))] == [
        str(post.pk).encode() for post in Post.objects.order_by("-created_at", "-pk")
    ]


def test_a_rebuild_keeps_the_newest_maxlen_posts(ada, bob, follow, publish, state_redis, monkeypatch):
    follow(bob, ada)
    for n in range(5):
        publish(ada, f"post {n}")
    monkeypatch.setattr(keys, "STREAM_MAXLEN", 3)
    state_redis.delete(keys.user_timeline(bob.pk))

    assert feed(bob) == ["post 4", "post 3", "post 2"]
    assert state_redis.xlen(keys.user_timeline(bob.pk)) == 3


def test_an_empty_timeline_is_kept_so_reads_do_not_rebuild_it(bob, state_redis, django_assert_num_queries):
    home_timeline_page(user_id=bob.pk)
    assert state_redis.exists(keys.user_timeline(bob.pk))

    with django_assert_num_queries(0):  # no rebuild query, and no posts to load
        assert feed(bob) == []


def test_a_built_timeline_page_costs_one_query_for_its_posts(ada, bob, follow, publish, django_assert_num_queries):
    follow(bob, ada)
    publish(ada, "one")
    publish(ada, "two")

    with django_assert_num_queries(1):
        assert feed(bob) == ["two", "one"]


def test_a_rebuild_that_raced_a_fanout_stores_nothing(ada, bob, follow, publish, state_redis, monkeypatch):
    # The rebuild reads the database; before it stores, a post commits and its fan-out
    # finds the timeline missing. The rebuild's read lacks that post: it must not store it.
    follow(bob, ada)
    state_redis.delete(keys.user_timeline(bob.pk))
    real = selectors._followed_posts
    raced: list[bool] = []

    def read_then_race(user_id, limit, before=None, **readers):
        rows = real(user_id, limit, before, **readers)
        if not raced:
            raced.append(True)
            publish(ada, "during the rebuild")
        return rows

    monkeypatch.setattr(selectors, "_followed_posts", read_then_race)

    assert feed(bob) == ["during the rebuild"]  # this page came from the database

    assert not state_redis.exists(keys.user_timeline(bob.pk))  # nothing stale stored
    assert feed(bob) == ["during the rebuild"]  # the next read rebuilds it, post included
    assert state_redis.xlen(keys.user_timeline(bob.pk)) == 1


def test_deleting_a_post_hides_it_from_timelines(ada, bob, as_bob, follow, publish, django_capture_on_commit_callbacks):
    follow(bob, ada)
    kept = publish(ada, "kept")
    gone = publish(ada, "gone")

    with django_capture_on_commit_callbacks(execute=True):
        post_delete(post=gone, editor=ada)

    body = as_bob.get("/api/feed").json()
    assert titles(body) == ["kept"]
    assert [item["post"]["id"] for item in body["items"]] == [kept.pk]


def test_an_edited_post_shows_its_edit_in_the_timeline(ada, bob, follow, publish):
    from posts.services import post_update

    follow(bob, ada)
    post = publish(ada, "draft")

    post_update(post=post, editor=ada, title="final")

    assert feed(bob) == ["final"]


# --- Redis away ---------------------------------------------------------------------------------


def test_timeline_reads_fall_back_to_the_database_when_redis_is_down(ada, bob, follow, publish, redis_server):
    follow(bob, ada)
    publish(ada, "one")
    publish(ada, "two")

    redis_server.stop()
    try:
        first = home_timeline_page(user_id=bob.pk, count=1)
        second = home_timeline_page(user_id=bob.pk, count=1, before=first["next"])
    finally:
        redis_server.start()

    assert titles(first) == ["two"]
    assert titles(second) == ["one"]


def test_a_post_made_while_redis_is_down_fans_out_once_it_is_back(
    ada, bob, follow, redis_server, django_capture_on_commit_callbacks
):
    import django_rq

    from jobs.services import outbox_drain
    from posts.jobs import fanout_post

    follow(bob, ada)
    redis_server.stop()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            post = post_create(author=ada, title="offline", content="...")
        job = Job.objects.get(kind=FANOUT_JOB)
        assert job.payload == {"postId": post.pk, "activity": True}
        assert job.enqueued_at is None  # waiting in the outbox
    finally:
        redis_server.start()

    # Redis came back empty (no persistence in tests): bob's timeline is rebuilt, the
    # job writes the author's activity line.
    Job.objects.filter(pk=job.pk).update(created_at=job.created_at.replace(year=2000))
    assert outbox_drain() == 1
    assert django_rq.get_queue("default").get_job_ids() == [str(job.pk)]
    fanout_post(str(job.pk))  # what the worker runs

    assert feed(bob) == ["offline"]
    from posts.selectors import user_activity_page

    assert [item["targetId"] for item in user_activity_page(user_id=ada.pk)["items"]] == [post.pk]


# --- The home page --------------------------------------------------------------------------------


def test_the_home_page_shows_the_timeline_on_the_following_tab_and_everyone_on_the_other(
    client, ada, bob, make_user, follow, publish
):
    carol = make_user(username="carol")
    follow(bob, ada)
    publish(ada, "from ada")
    publish(carol, "from carol")
    client.force_login(bob)

    following = client.get("/").content.decode()
    everyone = client.get("/", {"tab": "everyone"}).content.decode()

    assert "From people you follow" in following
    assert "from ada" in following
    assert "from carol" not in following
    assert 'action="/posts/new"' in following  # the compose form stays
    assert "Recent posts from everyone" in everyone
    assert "from ada" in everyone
    assert "from carol" in everyone
    assert 'aria-current="page">Everyone<' in everyone


def test_the_home_page_pages_with_load_older_links(client, ada, bob, follow, publish, monkeypatch):
    import posts.views

    monkeypatch.setattr(posts.views, "FEED_COUNT_DEFAULT", 1)
    follow(bob, ada)
    publish(ada, "older")
    publish(ada, "newer")
    client.force_login(bob)

    first = client.get("/").content.decode()
    next_cursor = home_timeline_page(user_id=bob.pk, count=1)["next"]
    second = client.get("/", {"before": next_cursor}).content.decode()
    mangled = client.get("/", {"before": "nonsense"})

    assert f"?before={next_cursor}" in first
    assert "About newer" in first
    assert "About older" not in first
    assert "About older" in second
    assert "About newer" not in second
    assert mangled.status_code == 200


def test_anonymous_visitors_see_only_everyones_posts(client, ada, publish):
    publish(ada, "public")

    page = client.get("/").content.decode()

    assert "From people you follow" not in page
    assert 'aria-label="Posts to show"' not in page  # no tabs: there is nothing to follow yet
    assert "public" in page
