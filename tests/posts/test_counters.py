"""View counters: views sent from memory to Redis, taken atomically and flushed to the database."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection
from django.db.models import QuerySet
from django.test import override_settings

from posts import counters, keys
from posts.counters import (
    flush_all_views,
    flush_views,
    pending_views,
    post_unique_viewers,
    record_page_view,
    record_post_view,
)
from posts.models import Page, Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(make_user) -> Post:
    return Post.objects.create(author=make_user(), title="Hello", content="First post")


@pytest.fixture
def page() -> Page:
    return Page.objects.create(slug="about", title="About", body="About Kestrel")


@pytest.fixture
def invalidated(monkeypatch) -> list[tuple[str, int]]:
    """The (family, id) of every cached copy a flush drops, in order."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(counters, "invalidate", lambda family, obj_id: calls.append((family, obj_id)))
    return calls


@pytest.fixture
def failing_updates(monkeypatch):
    """Every queryset UPDATE raises, as a database that went away would."""

    def update(self, **kwargs):
        raise OperationalError("the database is unavailable")

    monkeypatch.setattr(QuerySet, "update", update)


def view_count(obj: Post | Page) -> int:
    obj.refresh_from_db(fields=["view_count"])
    return obj.view_count


@pytest.fixture
def flush_every(monkeypatch):
    """Lower the database flush threshold for one test."""

    def set_to(n: int) -> None:
        monkeypatch.setattr(counters, "VIEW_FLUSH_EVERY", n)

    return set_to


def dirty_members(state_redis) -> set[bytes]:
    """Every view shard's dirty members (posts.keys.views_dirty)."""
    return set().union(*(state_redis.smembers(keys.views_dirty(shard)) for shard in range(keys.VIEW_SHARDS)))


def test_a_sent_view_increments_the_pending_count_the_unique_viewers_and_marks_the_post_dirty(post, state_redis):
    assert record_post_view(post_id=post.pk, viewer="u:1") == 1
    assert record_post_view(post_id=post.pk, viewer="u:1") == 2
    assert record_post_view(post_id=post.pk, viewer="u:2") == 3
    assert pending_views("post", [post.pk]) == {post.pk: 0}  # still in this process's memory

    assert flush_views() is True

    assert pending_views("post", [post.pk]) == {post.pk: 3}
    assert post_unique_viewers(post.pk) == 2
    assert dirty_members(state_redis) == {f"post:{post.pk}".encode()}
    assert view_count(post) == 0


def test_the_counters_have_no_ttl_on_the_state_role(post, page, state_redis):
    record_post_view(post_id=post.pk, viewer="u:1")
    record_page_view(page_id=page.pk, viewer="u:1")
    flush_views()

    dirty = {keys.views_dirty(keys.view_shard(post.pk)), keys.views_dirty(keys.view_shard(page.pk))}
    for key in (keys.post_views(post.pk), keys.post_viewers(post.pk), keys.page_views(page.pk), *dirty):
        assert state_redis.ttl(key) == -1, key


@pytest.mark.django_db(transaction=True)
def test_the_send_that_reaches_the_thousandth_view_moves_the_pending_views_into_the_row(post, state_redis, invalidated):
    # As the sending thread does: no transaction is open.
    for n in range(1, keys.VIEW_FLUSH_EVERY):
        record_post_view(post_id=post.pk, viewer=f"u:{n % 7}")
    flush_views()
    assert view_count(post) == 0
    assert pending_views("post", [post.pk]) == {post.pk: keys.VIEW_FLUSH_EVERY - 1}

    # The caller read the row (view_count 0) before the view: 0 + 1000 is exact.
    assert record_post_view(post_id=post.pk, viewer="u:1") == keys.VIEW_FLUSH_EVERY
    flush_views()

    assert view_count(post) == keys.VIEW_FLUSH_EVERY
    assert pending_views("post", [post.pk]) == {post.pk: 0}
    assert not state_redis.exists(keys.post_views(post.pk))
    assert invalidated == [("post", post.pk)]
    assert record_post_view(post_id=post.pk, viewer="u:1") == 1


def test_a_send_inside_a_transaction_flushes_the_row_after_commit(
    post, state_redis, invalidated, django_capture_on_commit_callbacks
):
    for n in range(keys.VIEW_FLUSH_EVERY):
        record_post_view(post_id=post.pk, viewer=f"u:{n % 7}")

    with django_capture_on_commit_callbacks(execute=True):
        flush_views()
        assert view_count(post) == 0  # the test's transaction has not committed yet

    assert view_count(post) == keys.VIEW_FLUSH_EVERY
    assert pending_views("post", [post.pk]) == {post.pk: 0}
    assert invalidated == [("post", post.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_page_view_reaching_the_threshold_flushes_at_once_outside_a_transaction(page, invalidated, flush_every):
    flush_every(5)
    for _ in range(4):
        record_page_view(page_id=page.pk, viewer="u:1")
    flush_views()
    assert view_count(page) == 0

    assert record_page_view(page_id=page.pk, viewer="u:1") == 5
    flush_views()

    assert view_count(page) == 5
    assert pending_views("page", [page.pk]) == {page.pk: 0}
    assert invalidated == [("page", page.pk)]


def test_flush_all_views_moves_every_dirty_counter_and_empties_the_dirty_set(make_user, page, state_redis, invalidated):
    author = make_user()
    posts = [Post.objects.create(author=author, title=f"Post {n}", content="...") for n in range(3)]
    for n, p in enumerate(posts, start=1):
        for _ in range(n):
            record_post_view(post_id=p.pk, viewer="u:1")
    for _ in range(4):
        record_page_view(page_id=page.pk, viewer="u:1")
    flush_views()

    assert flush_all_views(batch=2) == 1 + 2 + 3 + 4

    assert [view_count(p) for p in posts] == [1, 2, 3]
    assert view_count(page) == 4
    assert dirty_members(state_redis) == set()
    assert pending_views("post", [p.pk for p in posts]) == {p.pk: 0 for p in posts}
    assert sorted(invalidated) == sorted([("post", p.pk) for p in posts] + [("page", page.pk)])
    assert flush_all_views() == 0


def test_flush_all_views_drops_members_it_does_not_know(post, state_redis):
    record_post_view(post_id=post.pk, viewer="u:1")
    flush_views()
    state_redis.sadd(keys.views_dirty(keys.view_shard(post.pk)), "comment:1", "post:x")

    assert flush_all_views() == 1
    assert dirty_members(state_redis) == set()


def test_a_database_failure_during_flush_gives_the_views_back(post, state_redis, invalidated, monkeypatch):
    for _ in range(5):
        record_post_view(post_id=post.pk, viewer="u:1")
    flush_views()

    def update(self, **kwargs):
        raise OperationalError("the database is unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(QuerySet, "update", update)
        with pytest.raises(OperationalError):
            flush_all_views()

    assert pending_views("post", [post.pk]) == {post.pk: 5}
    assert f"post:{post.pk}".encode() in dirty_members(state_redis)
    assert view_count(post) == 0
    assert invalidated == []

    assert flush_all_views() == 5
    assert view_count(post) == 5


def test_a_failed_database_flush_does_not_fail_the_send_and_keeps_its_views(
    post, state_redis, failing_updates, flush_every, django_capture_on_commit_callbacks
):
    flush_every(3)
    for _ in range(3):
        record_post_view(post_id=post.pk, viewer="u:1")
    with django_capture_on_commit_callbacks(execute=True):
        assert flush_views() is True

    assert pending_views("post", [post.pk]) == {post.pk: 3}
    assert f"post:{post.pk}".encode() in dirty_members(state_redis)


def test_views_of_a_deleted_post_are_dropped_with_its_unique_viewers(post, state_redis, invalidated):
    record_post_view(post_id=post.pk, viewer="u:1")
    flush_views()
    post_id = post.pk
    post.delete()

    assert flush_all_views() == 0

    assert not state_redis.exists(keys.post_views(post_id), keys.post_viewers(post_id))
    assert dirty_members(state_redis) == set()
    assert invalidated == []


def test_unique_viewers_counts_distinct_viewers(post):
    for n in range(60):
        record_post_view(post_id=post.pk, viewer=f"u:{n % 12}")
    flush_views()

    assert post_unique_viewers(post.pk) == 12
    assert pending_views("post", [post.pk]) == {post.pk: 60}


def test_pending_views_reads_many_counters_in_one_call(make_user, page):
    author = make_user()
    viewed, unviewed = (Post.objects.create(author=author, title=t, content="...") for t in ("a", "b"))
    record_post_view(post_id=viewed.pk, viewer="u:1")
    record_post_view(post_id=viewed.pk, viewer="u:2")
    flush_views()

    assert pending_views("post", [viewed.pk, unviewed.pk]) == {viewed.pk: 2, unviewed.pk: 0}
    assert pending_views("page", []) == {}


def test_the_flush_job_runs_on_a_worker_of_the_periodic_queue(post, run_jobs):
    import django_rq

    from posts.jobs import flush_view_counts

    for _ in range(7):
        record_post_view(post_id=post.pk, viewer="u:1")
    flush_views()
    # Enqueued at once, as the cron scheduler does (it uses a plain rq Queue).
    queue = django_rq.get_queue("periodic", commit_mode="auto")
    job = queue.enqueue(flush_view_counts)

    # A SimpleWorker runs the job in this process, inside the test's database.
    run_jobs("periodic")

    job.refresh()
    assert job.is_finished
    assert job.return_value() == 7
    assert view_count(post) == 7


def test_the_cron_config_schedules_every_periodic_job_on_the_periodic_queue():
    from django_rq.cron import DjangoCronScheduler

    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("jobs/cron.py")

    jobs = {(job.func_name, job.queue_name, job.interval) for job in scheduler.get_jobs()}
    assert jobs == {
        ("posts.jobs.flush_view_counts", "periodic", 60),
        ("core.jobs.replay_invalidations", "periodic", 60),
        ("jobs.jobs.drain_outbox", "periodic", 60),
        ("ops.jobs.sample_ops", "periodic", 60),
        ("jobs.jobs.purge_expired", "periodic", 600),
    }


# The race: views from many threads while a sender and a flusher run in loops. ---------

THREADS = 8
VIEWS_PER_THREAD = 250


def run_views_racing_a_flusher(post_id: int) -> None:
    """8 threads record 2,000 views of one post while one thread sends and another flushes, in loops."""
    done = threading.Event()
    errors: list[BaseException] = []

    def view(thread: int) -> None:
        try:
            for n in range(VIEWS_PER_THREAD):
                record_post_view(post_id=post_id, viewer=f"u:{thread}:{n % 5}")
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            errors.append(exc)

    def send() -> None:
        # The sending thread's work: a send reaching the threshold flushes inline.
        try:
            while not done.is_set():
                flush_views()
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            errors.append(exc)
        finally:
            connection.close()

    def flush() -> None:
        try:
            while not done.is_set():
                try:
                    flush_all_views(batch=10)
                except OperationalError:
                    # SQLite's shared in-memory test database locks whole tables and
                    # answers a concurrent writer at once with "database table is
                    # locked" (no busy wait). The flush gave its views back: retry.
                    continue
        except BaseException as exc:  # noqa: BLE001  (reported by the test below)
            errors.append(exc)
        finally:
            connection.close()

    viewers = [threading.Thread(target=view, args=(n,)) for n in range(THREADS)]
    loops = [threading.Thread(target=send), threading.Thread(target=flush)]
    for thread in loops + viewers:
        thread.start()
    for thread in viewers:
        thread.join()
    done.set()
    for thread in loops:
        thread.join()
    assert errors == []
    assert flush_views() is True


@pytest.mark.django_db(transaction=True)
def test_views_racing_the_scheduled_flush_are_each_counted_exactly_once(make_user, state_redis):
    post = Post.objects.create(author=make_user(), title="Hot", content="...")

    # The real split: sends only touch Redis below the threshold, the job writes the rows.
    run_views_racing_a_flusher(post.pk)

    assert view_count(post) + pending_views("post", [post.pk])[post.pk] == THREADS * VIEWS_PER_THREAD
    flush_all_views()
    assert view_count(post) == THREADS * VIEWS_PER_THREAD
    assert dirty_members(state_redis) == set()


@pytest.mark.django_db(transaction=True)
def test_views_racing_threshold_and_scheduled_flushes_are_each_counted_exactly_once(
    make_user, state_redis, flush_every
):
    post = Post.objects.create(author=make_user(), title="Hot", content="...")

    # A low threshold makes the sender's own flushes race the flusher's takes (and, on
    # SQLite, fail on table locks and give their views back).
    flush_every(20)
    run_views_racing_a_flusher(post.pk)

    assert view_count(post) + pending_views("post", [post.pk])[post.pk] == THREADS * VIEWS_PER_THREAD
    flush_all_views()
    assert view_count(post) == THREADS * VIEWS_PER_THREAD


# Who counts as a distinct viewer. -------------------------------------------------------------

no_rate_limits = override_settings(KESTREL_RATE_LIMITS={})


@no_rate_limits
def test_sixty_anonymous_reads_with_sixty_user_agents_from_one_address_count_one_viewer(post, client):
    for n in range(60):
        response = client.get(f"/api/posts/{post.pk}", HTTP_USER_AGENT=f"Browser/{n}", REMOTE_ADDR="203.0.113.7")
        assert response.status_code == 200
    flush_views()

    assert post_unique_viewers(post.pk) == 1
    assert pending_views("post", [post.pk]) == {post.pk: 60}  # every read is still a view


@no_rate_limits
def test_anonymous_readers_at_different_addresses_are_different_viewers(post, client):
    for address in ("203.0.113.7", "203.0.113.8", "198.51.100.1"):
        client.get(f"/posts/{post.pk}", REMOTE_ADDR=address)
    flush_views()

    assert post_unique_viewers(post.pk) == 3


@no_rate_limits
def test_an_ipv6_client_rotating_through_its_own_64_is_one_viewer(post, client):
    for n in range(1, 21):
        client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=f"2001:db8:1:2::{n:x}")
    client.get(f"/api/posts/{post.pk}", REMOTE_ADDR="2001:db8:1:3::1")  # the next /64: someone else
    flush_views()

    assert post_unique_viewers(post.pk) == 2


@no_rate_limits
@override_settings(KESTREL_RATE_LIMIT_TRUSTED_PROXIES=1)
def test_behind_a_trusted_proxy_the_forwarded_address_is_the_viewer_and_what_the_client_adds_is_not(post, client):
    proxy = "10.0.0.2"
    for n in range(10):
        # The client forges a first hop; the proxy appends the address it saw.
        client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 203.0.113.7")
    client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.9")
    flush_views()

    assert post_unique_viewers(post.pk) == 2


@no_rate_limits
def test_a_logged_in_reader_is_one_viewer_from_any_address(post, client, make_user):
    client.force_login(make_user())
    for address in ("203.0.113.7", "198.51.100.1"):
        client.get(f"/api/posts/{post.pk}", REMOTE_ADDR=address, HTTP_USER_AGENT=address)
    flush_views()

    assert post_unique_viewers(post.pk) == 1
