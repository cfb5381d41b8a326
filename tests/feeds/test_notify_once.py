"""A like or a follow toggled back and forth notifies its person once per window."""

from __future__ import annotations

import pytest

from feeds import keys
from feeds.notifications import notification_list
from feeds.services import follow_create, follow_delete
from posts.selectors import user_activity_page
from posts.services import post_create, post_like, post_unlike

pytestmark = pytest.mark.django_db


@pytest.fixture
def post(ada, after_commit):
    with after_commit():
        return post_create(author=ada, title="Hello", content="...")


def kinds(user) -> list[str]:
    return [item["kind"] for item in notification_list(user_id=user.pk)["notifications"]]


def test_like_unlike_like_notifies_the_author_once_and_records_both_likes(ada, bob, post, after_commit):
    for _ in range(3):
        with after_commit():
            post_like(post=post, user=bob)
        with after_commit():
            post_unlike(post=post, user=bob)

    assert kinds(ada) == ["like"]
    liked = [item for item in user_activity_page(user_id=bob.pk)["items"] if item["action"] == "liked"]
    assert len(liked) == 3  # each real like is still in the liker's activity


def test_toggling_a_like_through_the_api_notifies_once(ada, post, as_bob, after_commit):
    for _ in range(5):
        with after_commit():
            assert as_bob.post(f"/api/posts/{post.pk}/like").status_code == 201
        with after_commit():
            assert as_bob.delete(f"/api/posts/{post.pk}/like").status_code == 204

    assert kinds(ada) == ["like"]


def test_follow_unfollow_follow_notifies_once(ada, bob, after_commit):
    for _ in range(3):
        with after_commit():
            follow_create(follower=bob, followee=ada)
        with after_commit():
            follow_delete(follower=bob, followee=ada)

    assert kinds(ada) == ["follow"]


def test_the_window_is_per_actor_and_target(ada, bob, make_user, post, after_commit):
    with after_commit():
        other = post_create(author=ada, title="Another", content="...")
    carol = make_user()
    with after_commit():
        post_like(post=post, user=bob)
        post_like(post=other, user=bob)
        post_like(post=post, user=carol)

    assert kinds(ada) == ["like", "like", "like"]


def test_after_the_window_a_new_like_notifies_again(ada, bob, post, after_commit, state_redis):
    with after_commit():
        post_like(post=post, user=bob)
    with after_commit():
        post_unlike(post=post, user=bob)
    key = keys.notified_once("like", bob.pk, post.pk, recipient_id=ada.pk)
    assert keys.NOTIFY_ONCE_WINDOW - 5 <= state_redis.ttl(key) <= keys.NOTIFY_ONCE_WINDOW

    state_redis.delete(key)  # what the key's expiry does when the window ends
    with after_commit():
        post_like(post=post, user=bob)

    assert kinds(ada) == ["like", "like"]
