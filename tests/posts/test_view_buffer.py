"""Views counted in process memory: no Redis on the read's path, sent in batches, bounded."""

from __future__ import annotations

import logging
import time

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from core import cacheaside, metrics
from core.batching import Batch, apply_once
from core.redis import breaker, get_redis
from posts import counters, keys
from posts.counters import flush_views, pending_views, post_unique_viewers, record_post_view
from posts.models import Page, Post
from tests.posts.round_trips import recording

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(make_user) -> Post:
    return Post.objects.create(author=make_user(), title="Hello", content="First post")


def view_count(obj: Post | Page) -> int:
    obj.refresh_from_db(fields=["view_count"])
    return obj.view_count


def send_as_another_process(post_id: int, views: int, *, viewers: tuple[str, ...] = ()) -> int:
    """What another process's send writes (posts.counters._send_views): its pending total after."""
    counter = keys.post_views(post_id)
    _, totals = apply_once(
        get_redis("state"),
        sequence_key=keys.view_batches("another-process", keys.view_shard(post_id)),
        seq=1,
        ttl=keys.VIEW_BATCH_TTL,
        counters={counter: views},
        hyperloglogs={keys.post_viewers(post_id): viewers} if viewers else {},
        sets={keys.views_dirty(keys.view_shard(post_id)): [f"post:{post_id}"]},
    )
    return totals[counter]


def test_an_anonymous_post_read_from_the_l1_costs_only_the_rate_limits_round_trip(post):
    assert cacheaside.l1().wait_until_listening(10)
    client = APIClient()
    client.get(f"/api/posts/{post.pk}")  # fills the L1, connects the pools
    flush_views()  # loads the script

    with recording() as trips:
        responses = [client.get(f"/api/posts/{post.pk}") for _ in range(5)]

    assert trips.names() == [("state", "EVALSHA")] * 5  # the limiter; the views: nothing
    assert [response.status_code for response in responses] == [200] * 5
    assert [response.json()["views"] for response in responses] == [2, 3, 4, 5, 6]
    with recording() as trips:
        flush_views()
    assert trips.names() == [("state", "EVALSHA")]  # the five views, in one call
    assert pending_views("post", [post.pk]) == {post.pk: 6}


def test_the_views_field_is_the_row_plus_what_this_process_knows_of_the_pending_views(post):
    client = APIClient()
    Post.objects.filter(pk=post.pk).update(view_count=100)  # flushed earlier
    cacheaside.invalidate("post", post.pk)
    assert client.get(f"/api/posts/{post.pk}").json()["views"] == 101
    flush_views()

    send_as_another_process(post.pk, 10)
    # Another process's views reach this one with its next send (one interval later)...
    assert client.get(f"/api/posts/{post.pk}").json()["views"] == 102
    flush_views()
    # ...which returns the shared pending total: 1 + 10 + 1.
    assert client.get(f"/api/posts/{post.pk}").json()["views"] == 113


@pytest.mark.django_db(transaction=True)
def test_views_sent_by_two_processes_reach_the_database_when_their_sum_reaches_the_threshold(post, state_redis):
    assert send_as_another_process(post.pk, 600, viewers=("u:1", "u:2")) == 600
    for n in range(keys.VIEW_FLUSH_EVERY - 600 - 1):
        record_post_view(post_id=post.pk, viewer=f"u:{n % 3}")
    flush_views()
    assert view_count(post) == 0  # 999 pending

    record_post_view(post_id=post.pk, viewer="u:9")
    flush_views()

    assert view_count(post) == keys.VIEW_FLUSH_EVERY
    assert not state_redis.exists(keys.post_views(post.pk))
    assert post_unique_viewers(post.pk) == 4  # u:0, u:1, u:2, u:9


def test_while_the_state_role_is_down_post_reads_answer_and_their_views_are_sent_once_it_is_back(
    post, redis_server, state_redis
):
    client = APIClient()
    assert client.get(f"/api/posts/{post.pk}").status_code == 200

    redis_server.stop()  # without persistence: it comes back empty
    try:
        responses = [client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=f"203.0.113.{n}") for n in range(5)]
        assert flush_views() is False  # kept
    finally:
        redis_server.start()
    breaker("state").reset()

    assert [response.status_code for response in responses] == [200] * 5
    assert [response.json()["views"] for response in responses] == [2, 3, 4, 5, 6]
    assert metrics.value("batching.send_failed", buffer="views") == 1
    assert flush_views() is True
    assert pending_views("post", [post.pk]) == {post.pk: 6}
    assert post_unique_viewers(post.pk) == 6


@pytest.mark.slow
def test_a_hung_state_role_leaves_post_reads_at_200_and_their_views_land_once_it_resumes(post, redis_server):
    options = settings.CACHES["sessions"]["OPTIONS"]
    one_hung_call = options["SOCKET_CONNECT_TIMEOUT"] + options["SOCKET_TIMEOUT"]
    client = APIClient()
    client.get(f"/api/posts/{post.pk}", REMOTE_ADDR="203.0.113.100")
    flush_views()  # leaves a connection open in the pool: the next send is written at once
    for n in range(5):
        client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=f"203.0.113.{n}")

    redis_server.pause()
    try:
        # The send reaches the frozen server and times out; the server runs it when it
        # resumes, and it is sent again anyway.
        assert flush_views() is False
        breaker("state").reset()
        timings = []
        for n in range(5):
            started = time.monotonic()
            response = client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=f"203.0.113.{n}")
            timings.append(time.monotonic() - started)
            assert response.status_code == 200, response.content
    finally:
        redis_server.resume()
    breaker("state").reset()
    breaker("cache").reset()

    # The general rate limit fails open after one hung call; the breaker makes the
    # others fail fast. The view itself never waits on Redis.
    assert timings[0] < one_hung_call + 1.0
    assert sum(timings[1:]) < 1.0
    assert flush_views() is True
    # 1 + 5 + 5, each once: the late copy of the timed-out send and its retry count once.
    assert pending_views("post", [post.pk]) == {post.pk: 11}
    assert post_unique_viewers(post.pk) == 6


def test_beyond_the_buffer_bound_views_of_new_posts_are_dropped_and_counted(make_user, monkeypatch, caplog):
    author = make_user()
    posts = [Post.objects.create(author=author, title=f"Post {n}", content="...") for n in range(4)]
    monkeypatch.setattr(counters.view_buffer, "max_keys", 2)

    for p in posts:
        record_post_view(post_id=p.pk, viewer="u:1")
    record_post_view(post_id=posts[0].pk, viewer="u:1")  # a post already buffered still counts
    with caplog.at_level(logging.ERROR, logger="core.batching"):
        flush_views()

    pending = pending_views("post", [p.pk for p in posts])
    assert [pending[p.pk] for p in posts] == [2, 1, 0, 0]
    assert metrics.value("batching.dropped", buffer="views", reason="full") == 2
    assert "views is full" in caplog.text


def test_views_of_posts_in_every_shard_go_in_one_round_trip_each_shard_to_its_own_keys(state_redis):
    ids = list(range(1, 2 * keys.VIEW_SHARDS + 1))  # two posts in each view shard
    for post_id in ids:
        record_post_view(post_id=post_id, viewer="u:1")

    with recording() as trips:
        assert flush_views() is True

    assert trips.names() == [("state", "PIPELINE")]  # a SCRIPT LOAD and one call per shard
    assert pending_views("post", ids) == {post_id: 1 for post_id in ids}
    for shard in range(keys.VIEW_SHARDS):
        assert state_redis.smembers(keys.views_dirty(shard)) == {
            f"post:{post_id}".encode() for post_id in ids if keys.view_shard(post_id) == shard
        }
    sequences = list(state_redis.scan_iter(match=f"{settings.KESTREL_KEY_PREFIX}:posts:views:*:batch:*"))
    assert len(sequences) == keys.VIEW_SHARDS  # this process's batch number, once per shard


def test_a_batch_sent_again_counts_once_in_every_shard(state_redis):
    ids = list(range(1, keys.VIEW_SHARDS + 1))
    batch = Batch(process="a-process", seq=1, counts={("post", post_id): 2 for post_id in ids})
    first = counters._send_views(batch)
    # Its reply lost to a timeout, the same batch goes again: the shards skip it.
    assert counters._send_views(batch) == first == {("post", post_id): 2 for post_id in ids}
    assert pending_views("post", ids) == {post_id: 2 for post_id in ids}

    state_redis.delete(keys.view_batches("a-process", keys.view_shard(ids[0])))  # one shard never saw it
    counters._send_views(batch)
    assert pending_views("post", ids) == {post_id: 4 if post_id == ids[0] else 2 for post_id in ids}


def record_a_view(post_id: int) -> None:
    """A job that counts a view (no job does today; the worker must not lose it if one does)."""
    record_post_view(post_id=post_id, viewer="u:job")


def test_a_view_counted_in_a_job_is_sent_when_the_job_ends(state_redis):
    from redis import Redis
    from rq import Queue

    from core.redis import role_url
    from jobs.workers import KestrelWorker

    connection = Redis.from_url(role_url("queue"))  # RQ changes its pool's socket timeout
    try:
        queue = Queue("views-test", connection=connection)
        job = queue.enqueue(record_a_view, 42)
        # No timed sends in this test process (interval 0): only the job's end sends it.
        KestrelWorker([queue], connection=connection).work(burst=True)
        job.refresh()
        assert job.is_finished
    finally:
        connection.close()

    assert pending_views("post", [42]) == {42: 1}
