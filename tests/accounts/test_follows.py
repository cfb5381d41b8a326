"""The follow graph: the lists and counts, the database as the truth and its Redis mirror
(sets on the cache role), rebuilt when missing, and what happens when Redis is away.
Following and unfollowing themselves are feeds' (tests/feeds/test_follows.py)."""

from __future__ import annotations

import pytest
from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from accounts import keys
from accounts import selectors as follow_selectors
from accounts.models import Follow, User
from accounts.selectors import follow_counts, follow_exists, follower_id_batches, follower_ids
from accounts.services import follow_mirror_update
from core import metrics
from core.cacheaside import replay_pending_invalidations
from core.models import PendingInvalidation
from feeds.services import follow_create, follow_delete

pytestmark = pytest.mark.django_db


def follow(follower, followee, callbacks) -> None:
    with callbacks(execute=True):
        follow_create(follower=follower, followee=followee)


# --- Lists ---------------------------------------------------------------------------------


def test_the_database_refuses_a_self_follow_too(bob):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Follow.objects.create(follower=bob, followee=bob)


def test_followers_and_following_lists_page_newest_first_by_cursor(ada, make_user, django_capture_on_commit_callbacks):
    fans = [make_user() for _ in range(5)]
    for fan in fans:
        follow(fan, ada, django_capture_on_commit_callbacks)
    api = APIClient()

    pages, before = [], None
    while True:
        query = {"count": 2} if before is None else {"count": 2, "before": before}
        body = api.get(f"/api/users/{ada.pk}/followers", query).json()
        pages.append([user["username"] for user in body["users"]])
        before = body["next"]
        if before is None:
            break

    newest_first = [fan.username for fan in reversed(fans)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
    assert body["total"] == 5
    following = api.get(f"/api/users/{fans[0].pk}/following").json()
    assert [user["id"] for user in following["users"]] == [ada.pk]
    assert following["total"] == 1


@pytest.mark.parametrize("query", [{"count": 0}, {"count": 101}, {"count": "x"}, {"before": "0"}, {"before": "x"}])
def test_bad_list_parameters_are_400(ada, query):
    response = APIClient().get(f"/api/users/{ada.pk}/followers", query)

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid input"
    assert set(response.json()["details"]) <= {"count", "before"}


def test_lists_of_an_unknown_user_are_404():
    assert APIClient().get("/api/users/999999/following").status_code == 404


# --- The Redis mirror ------------------------------------------------------------------------------


def test_follow_checks_and_counts_come_from_redis_once_built(
    bob, ada, django_capture_on_commit_callbacks, django_assert_num_queries
):
    follow(bob, ada, django_capture_on_commit_callbacks)
    follow_exists(follower_id=bob.pk, followee_id=ada.pk)
    follow_counts(user_id=ada.pk)

    with django_assert_num_queries(0):
        assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)
        assert not follow_exists(follower_id=ada.pk, followee_id=bob.pk)  # a built set of nobody
        assert follow_counts(user_id=ada.pk) == {"followers": 1, "following": 0}


def test_a_deleted_mirror_is_rebuilt_from_the_database(
    bob, ada, make_user, cache_redis, django_capture_on_commit_callbacks
):
    carol = make_user(username="carol")
    follow(bob, ada, django_capture_on_commit_callbacks)
    follow(carol, ada, django_capture_on_commit_callbacks)
    assert follower_ids(user_id=ada.pk) == sorted([bob.pk, carol.pk])

    cache_redis.delete(keys.user_followers(ada.pk))

    assert follow_counts(user_id=ada.pk)["followers"] == 2
    assert cache_redis.smembers(keys.user_followers(ada.pk)) == {
        str(bob.pk).encode(),
        str(carol.pk).encode(),
        keys.FOLLOW_SET_MARKER.encode(),
    }
    assert 0 < cache_redis.ttl(keys.user_followers(ada.pk)) <= keys.FOLLOW_SET_TTL * 1.1


def test_a_follow_never_creates_a_partial_set(bob, ada, cache_redis, django_capture_on_commit_callbacks):
    follow(bob, ada, django_capture_on_commit_callbacks)  # nothing was built before

    assert not cache_redis.exists(keys.user_followers(ada.pk), keys.user_following(bob.pk))


def test_a_rebuild_that_raced_a_follow_stores_nothing(bob, ada, cache_redis, monkeypatch):
    # The rebuild reads the database (nobody follows ada yet); before it stores, a
    # follow commits and updates the mirror, which deletes the rebuild lease. The
    # rebuild must not store its older read over that follow.
    real = follow_selectors._FOLLOWERS_MIRROR.ids
    raced: list[bool] = []

    def read_then_race(user_id):
        if raced:
            return real(user_id)
        raced.append(True)
        stale = Follow.objects.none().values_list("follower_id", flat=True)
        Follow.objects.create(follower=bob, followee=ada)
        follow_mirror_update(follower_id=bob.pk, followee_id=ada.pk, added=True)
        return stale

    racing = follow_selectors._Mirror(follow_selectors.FOLLOWERS, keys.user_followers_rebuild, read_then_race)
    monkeypatch.setattr(follow_selectors, "_FOLLOWERS_MIRROR", racing)

    assert follow_counts(user_id=ada.pk)["followers"] == 1  # answered from the database

    assert not cache_redis.exists(keys.user_followers(ada.pk))  # nothing stale stored
    assert follower_ids(user_id=ada.pk) == [bob.pk]  # the next read rebuilds, follow included


def test_a_rebuild_another_process_holds_answers_from_the_database_and_stores_nothing(
    bob, ada, cache_redis, django_capture_on_commit_callbacks
):
    follow(bob, ada, django_capture_on_commit_callbacks)
    cache_redis.set(keys.user_followers_rebuild(ada.pk), "another process", px=keys.FOLLOW_REBUILD_LEASE_MS)

    assert follower_ids(user_id=ada.pk) == [bob.pk]

    assert not cache_redis.exists(keys.user_followers(ada.pk))
    assert metrics.value("cache.rebuild_busy", family=follow_selectors.FOLLOWERS.name) == 1


def test_a_big_follower_set_is_scanned_in_batches_each_id_once(ada, cache_redis):
    fans = User.objects.bulk_create(
        [User(username=f"fan{n}", email=f"fan{n}@example.com") for n in range(1_200)], batch_size=500
    )
    Follow.objects.bulk_create([Follow(follower=fan, followee=ada) for fan in fans], batch_size=500)
    follower_ids(user_id=ada.pk)  # builds the set

    batches = list(follower_id_batches(user_id=ada.pk, size=500))

    assert all(len(batch) <= 500 for batch in batches)
    assert len(batches) >= 3
    seen = [user_id for batch in batches for user_id in batch]
    assert sorted(seen) == sorted(fan.pk for fan in fans)  # every follower, none twice


# --- Redis away ----------------------------------------------------------------------------------


def test_a_follow_commits_while_redis_is_down_and_the_mirror_is_rebuilt_later(
    bob, ada, redis_server, django_capture_on_commit_callbacks
):
    follow_exists(follower_id=bob.pk, followee_id=ada.pk)  # bob's set: built, empty
    redis_server.stop()
    try:
        follow(bob, ada, django_capture_on_commit_callbacks)

        assert Follow.objects.filter(follower=bob, followee=ada).exists()
        # Reads fall back to the database meanwhile.
        assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)
        assert follow_counts(user_id=ada.pk) == {"followers": 1, "following": 0}
        # The sets that missed the write are dropped once Redis answers again.
        assert set(PendingInvalidation.objects.values_list("family", "obj_id")) == {
            (follow_selectors.FOLLOWERS.name, str(ada.pk)),
            (follow_selectors.FOLLOWING.name, str(bob.pk)),
        }
    finally:
        redis_server.start()

    assert replay_pending_invalidations() == 2
    assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)  # rebuilt from the database


def test_an_unfollow_the_mirror_missed_drops_both_sets(
    bob, ada, cache_redis, monkeypatch, django_capture_on_commit_callbacks
):
    import accounts.services

    follow(bob, ada, django_capture_on_commit_callbacks)
    assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)
    assert follow_counts(user_id=ada.pk)["followers"] == 1

    def unreachable(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(accounts.services, "script_queue", unreachable)  # the mirror's pipeline
    with django_capture_on_commit_callbacks(execute=True):
        follow_delete(follower=bob, followee=ada)

    assert not cache_redis.exists(keys.user_followers(ada.pk), keys.user_following(bob.pk))
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)
    assert follow_counts(user_id=ada.pk)["followers"] == 0


# --- Pages and deletes --------------------------------------------------------------------------


def test_no_follow_button_on_your_own_profile(client, bob):
    client.force_login(bob)

    page = client.get(f"/users/{bob.pk}").content.decode()

    assert 'value="follow"' not in page
    assert "0 following" in page


def test_deleting_a_user_drops_them_from_their_neighbours_follow_sets(
    ada, bob, cache_redis, django_capture_on_commit_callbacks
):
    follow(bob, ada, django_capture_on_commit_callbacks)
    assert follower_ids(user_id=ada.pk) == [bob.pk]  # the mirror is built
    assert cache_redis.exists(keys.user_followers(ada.pk))

    with django_capture_on_commit_callbacks(execute=True):
        bob.delete()

    assert not cache_redis.exists(keys.user_followers(ada.pk))
    assert follower_ids(user_id=ada.pk) == []
