"""Invalidation after commit, on every path that saves a post, with real transactions
and two real database connections."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from core.cacheaside import get_or_load
from core.l1 import invalidation_channel
from posts import keys
from posts.models import Post
from posts.selectors import POST, _load_post, post_detail
from posts.services import post_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def post(make_user):
    return post_create(author=make_user(username="ada"), title="old title", content="...")


def _in_thread(target):
    """Run `target` on its own thread, hence its own database connection."""
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_a_reader_during_an_uncommitted_edit_caches_the_old_row_only_until_commit(post, cache_redis):
    saved, reader_done = threading.Event(), threading.Event()

    def writer():
        with transaction.atomic():
            Post.objects.filter(pk=post.pk).update(title="new title")
            Post.objects.get(pk=post.pk).save()  # the save signal registers the invalidation
            saved.set()
            reader_done.wait(10)
        # commit: the on_commit invalidation runs here

    thread, errors = _in_thread(writer)
    saved.wait(10)
    seen_during = post_detail(post_id=post.pk)["title"]  # another connection: the old row
    assert cache_redis.exists(keys.post_detail(post.pk))
    reader_done.set()
    thread.join(10)

    assert not errors
    assert seen_during == "old title"
    assert not cache_redis.exists(keys.post_detail(post.pk))
    assert post_detail(post_id=post.pk)["title"] == "new title"


def test_a_reader_that_loaded_before_the_commit_cannot_store_after_it(post, cache_redis):
    """The stale-set race: read old row, writer commits and invalidates, reader stores.
    The lease makes that last store a no-op."""
    loaded, committed = threading.Event(), threading.Event()

    def slow_reader_loader():
        row = _load_post(post.pk)
        loaded.set()
        committed.wait(10)
        return row

    def writer():
        loaded.wait(10)
        with transaction.atomic():
            fresh = Post.objects.get(pk=post.pk)
            fresh.title = "new title"
            fresh.save()
        committed.set()

    thread, errors = _in_thread(writer)
    stale = get_or_load(POST, post.pk, slow_reader_loader)
    thread.join(10)

    assert not errors
    assert stale["title"] == "old title"  # what that one reader saw
    assert not cache_redis.exists(keys.post_detail(post.pk))  # but it was not stored
    assert post_detail(post_id=post.pk)["title"] == "new title"


def test_a_rolled_back_edit_invalidates_nothing(post, cache_redis):
    post_detail(post_id=post.pk)
    pubsub = cache_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(invalidation_channel())
    pubsub.get_message(timeout=1)

    def edit_then_fail():
        with transaction.atomic():
            post.title = "never committed"
            post.save()
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError):
        edit_then_fail()

    assert cache_redis.exists(keys.post_detail(post.pk))
    assert pubsub.get_message(timeout=0.5) is None
    pubsub.close()
    assert post_detail(post_id=post.pk)["title"] == "old title"


def test_saving_from_the_shell_invalidates_and_broadcasts(post, cache_redis):
    post_detail(post_id=post.pk)
    pubsub = cache_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(invalidation_channel())
    pubsub.get_message(timeout=1)

    post.title = "edited in a shell"
    post.save()

    message = pubsub.get_message(timeout=2)
    pubsub.close()
    assert json.loads(message["data"]) == {"type": "post", "id": post.pk}
    assert post_detail(post_id=post.pk)["title"] == "edited in a shell"


def test_editing_in_the_admin_invalidates(post, make_user):
    admin = make_user(is_staff=True)
    admin.is_superuser = True
    admin.save()
    client = APIClient()
    client.force_login(admin)
    post_detail(post_id=post.pk)

    response = client.post(
        f"/admin/posts/post/{post.pk}/change/",
        {"author": post.author_id, "title": "edited in the admin", "content": "..."},
    )

    assert response.status_code == 302
    assert post_detail(post_id=post.pk)["title"] == "edited in the admin"


def test_creating_a_post_from_any_path_clears_a_cached_404(make_user, cache_redis):
    future_id = 10**9
    assert APIClient().get(f"/api/posts/{future_id}").status_code == 404
    assert cache_redis.exists(keys.post_detail(future_id))

    Post.objects.create(pk=future_id, author=make_user(), title="now I exist", content="...")

    assert APIClient().get(f"/api/posts/{future_id}").status_code == 200
