"""The follow graph: the API and pages, the database as the truth and its Redis mirror
(sets on the cache role), rebuilt when missing, and what happens when Redis is away."""

from __future__ import annotations

import pytest
from django.db import transaction
from redis.exceptions import ConnectionError as RedisConnectionError
from rest_framework.test import APIClient

from accounts import keys
from accounts import selectors as follow_selectors
from accounts.models import Follow, User
from accounts.selectors import follow_counts, follow_exists, follower_id_batches, follower_ids
from accounts.services import follow_create, follow_delete, follow_mirror_update
from core.cacheaside import replay_pending_invalidations
from core.models import PendingInvalidation
from feeds import keys as feed_keys

pytestmark = pytest.mark.django_db


@pytest.fixture
def notified(monkeypatch):
    """The notifications the follow graph queues (still delivered for real)."""
    import feeds.services

    calls: list[dict] = []
    real = feeds.services.notification_queue_once

    def spy(pipe, **kwargs):
        calls.append({name: kwargs[name] for name in ("user_id", "kind", "message", "data")})
        return real(pipe, **kwargs)

    monkeypatch.setattr(feeds.services, "notification_queue_once", spy)
    return calls


def follow(follower, followee, callbacks) -> None:
    with callbacks(execute=True):
        follow_create(follower=follower, followee=followee)


# --- The API ---------------------------------------------------------------------------------


def test_following_someone_is_201_and_records_one_row(
    as_bob, bob, ada, notified, state_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_bob.post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 201
    assert response.json() == {"following": True, "userId": ada.pk}
    assert list(Follow.objects.values_list("follower_id", "followee_id")) == [(bob.pk, ada.pk)]
    assert [(n["user_id"], n["kind"]) for n in notified] == [(ada.pk, "follow")]
    [(_, fields)] = state_redis.xrange(feed_keys.user_activity(bob.pk))
    assert fields[b"action"] == b"followed"
    assert fields[b"targetId"] == str(ada.pk).encode()


def test_following_twice_is_409_and_writes_nothing_more(
    as_bob, bob, ada, notified, state_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        as_bob.post(f"/api/users/{ada.pk}/follow")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 409
    assert response.json() == {"error": "You already follow this user"}
    assert Follow.objects.count() == 1
    assert callbacks == []  # no mirror write, no activity, no notification
    assert len(notified) == 1
    assert state_redis.xlen(feed_keys.user_activity(bob.pk)) == 1


def test_following_yourself_is_400_and_writes_nothing(as_bob, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post(f"/api/users/{bob.pk}/follow")

    assert response.status_code == 400
    assert response.json() == {"error": "Invalid input", "details": {"userId": ["You cannot follow yourself."]}}
    assert not Follow.objects.exists()
    assert callbacks == []


def test_the_database_refuses_a_self_follow_too(bob):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Follow.objects.create(follower=bob, followee=bob)


def test_following_an_unknown_user_is_404_and_writes_nothing(as_bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = as_bob.post("/api/users/999999/follow")

    assert response.status_code == 404
    assert response.json() == {"error": "User not found"}
    assert not Follow.objects.exists()
    assert callbacks == []


def test_following_needs_a_login(ada):
    response = APIClient().post(f"/api/users/{ada.pk}/follow")

    assert response.status_code == 401
    assert not Follow.objects.exists()


def test_unfollowing_is_204_and_unfollowing_again_is_404(as_bob, bob, ada, django_capture_on_commit_callbacks):
    follow(bob, ada, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        first = as_bob.delete(f"/api/users/{ada.pk}/follow")
    second = as_bob.delete(f"/api/users/{ada.pk}/follow")

    assert first.status_code == 204
    assert second.status_code == 404
    assert second.json() == {"error": "You do not follow this user"}
    assert not Follow.objects.exists()
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)


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


def test_the_mirror_changes_only_after_commit(bob, ada, cache_redis, django_capture_on_commit_callbacks):
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)  # builds bob's (empty) set

    with django_capture_on_commit_callbacks() as callbacks:
        follow_create(follower=bob, followee=ada)
        assert not cache_redis.sismember(keys.user_following(bob.pk), ada.pk)
    for callback in callbacks:
        callback()

    assert cache_redis.sismember(keys.user_following(bob.pk), ada.pk)
    assert follow_exists(follower_id=bob.pk, followee_id=ada.pk)


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
    real = follow_selectors._FOLLOWERS.ids
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
    monkeypatch.setattr(follow_selectors, "_FOLLOWERS", racing)

    assert follow_counts(user_id=ada.pk)["followers"] == 1  # answered from the database

    assert not cache_redis.exists(keys.user_followers(ada.pk))  # nothing stale stored
    assert follower_ids(user_id=ada.pk) == [bob.pk]  # the next read rebuilds, follow included


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
            ("followers", str(ada.pk)),
            ("following", str(bob.pk)),
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

    def unreachable(**kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(accounts.services, "_mirror_update_script", lambda: unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        follow_delete(follower=bob, followee=ada)

    assert not cache_redis.exists(keys.user_followers(ada.pk), keys.user_following(bob.pk))
    assert not follow_exists(follower_id=bob.pk, followee_id=ada.pk)
    assert follow_counts(user_id=ada.pk)["followers"] == 0


# --- Pages ----------------------------------------------------------------------------------------


def test_the_profile_page_shows_counts_and_a_follow_button(client, bob, ada, django_capture_on_commit_callbacks):
    client.force_login(bob)

    page = client.get(f"/users/{ada.pk}").content.decode()
    assert "0 followers" in page
    assert 'value="follow"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/users/{ada.pk}/follow", {"action": "follow"})
    assert response.status_code == 302

    page = client.get(response["Location"]).content.decode()
    assert "You now follow @ada." in page
    assert "1 follower" in page
    assert 'value="unfollow"' in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/users/{ada.pk}/follow", {"action": "unfollow"})
    assert "0 followers" in client.get(f"/users/{ada.pk}").content.decode()
    assert not Follow.objects.exists()


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
