"""The leaderboard: a sorted set on the cache role, rebuilt from the database when missing."""

from __future__ import annotations

import pytest
from django.db.models import F

from accounts.models import User
from core import metrics
from posts import keys, leaderboard
from posts.leaderboard import (
    leaderboard_around,
    leaderboard_entry,
    leaderboard_like_changed,
    leaderboard_rebuild,
    leaderboard_top,
)
from posts.models import Post

pytestmark = pytest.mark.django_db


@pytest.fixture
def author_with_likes(make_user):
    """Create a user whose posts have these like counts; returns the user."""

    def make(*likes: int):
        user = make_user()
        for n, count in enumerate(likes):
            Post.objects.create(author=user, title=f"Post {n}", content="...", like_count=count)
        return user

    return make


def like(post: Post) -> None:
    """A like as the like service makes it: the row changes, then the leaderboard hears."""
    Post.objects.filter(pk=post.pk).update(like_count=F("like_count") + 1)
    leaderboard_like_changed(author_id=post.author_id, delta=1)


def ranking(entries: list[dict]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["username"], e["likes"]) for e in entries]


@pytest.fixture
def board(author_with_likes):
    """Five people: bea 9, ada 5 (3 + 2, the earlier account), cy 5, dan 4, eve 1; zoe none."""
    people = {}
    for name, likes in [("ada", (3, 2)), ("bea", (9,)), ("cy", (5,)), ("dan", (4,)), ("eve", (1,)), ("zoe", (0,))]:
        people[name] = author_with_likes(*likes)
        people[name].username = name
        people[name].save(update_fields=["username"])
    return people


def test_people_are_ranked_by_likes_received_and_equal_likes_put_the_earlier_account_first(board):
    assert board["ada"].pk < board["cy"].pk

    assert ranking(leaderboard_top(count=10)) == [
        (1, "bea", 9),
        (2, "ada", 5),
        (3, "cy", 5),
        (4, "dan", 4),
        (5, "eve", 1),
    ]


def test_top_entries_carry_the_user_id_and_stop_at_count(board):
    assert leaderboard_top(count=2) == [
        {"rank": 1, "userId": board["bea"].pk, "username": "bea", "likes": 9},
        {"rank": 2, "userId": board["ada"].pk, "username": "ada", "likes": 5},
    ]


def test_ties_break_by_numeric_id_not_by_the_text_of_the_id():
    # Unpadded, the members would sort "10", "100", "9"; zero-padded they sort as numbers.
    for user_id in (100, 9, 10):
        user = User.objects.create(id=user_id, username=f"user{user_id}", email=f"user{user_id}@example.com")
        Post.objects.create(author=user, title="Post", content="...", like_count=2)

    assert [e["userId"] for e in leaderboard_top(count=3)] == [9, 10, 100]


def test_own_rank_and_likes(board):
    assert leaderboard_entry(user_id=board["cy"].pk) == {
        "rank": 3,
        "userId": board["cy"].pk,
        "username": "cy",
        "likes": 5,
    }
    assert leaderboard_entry(user_id=board["zoe"].pk) is None


@pytest.mark.parametrize(
    ("name", "radius", "expected"),
    [
        ("cy", 1, [(2, "ada"), (3, "cy"), (4, "dan")]),
        ("cy", 2, [(1, "bea"), (2, "ada"), (3, "cy"), (4, "dan"), (5, "eve")]),
        ("bea", 2, [(1, "bea"), (2, "ada"), (3, "cy")]),  # rank 1: nothing above
        ("eve", 2, [(3, "cy"), (4, "dan"), (5, "eve")]),  # last rank: nothing below
        ("zoe", 2, []),  # no likes yet: not on the board
    ],
)
def test_around_me_is_the_window_of_ranks_around_the_person(board, name, radius, expected):
    window = leaderboard_around(user_id=board[name].pk, radius=radius)

    assert [(e["rank"], e["username"]) for e in window] == expected


def test_a_missing_leaderboard_is_rebuilt_from_the_database_on_read(board, cache_redis):
    assert not cache_redis.exists(keys.leaderboard())

    leaderboard_top(count=1)

    assert cache_redis.zcard(keys.leaderboard()) == 5
    assert 0 < cache_redis.ttl(keys.leaderboard()) <= keys.LEADERBOARD_TTL


def test_a_stored_leaderboard_is_read_from_redis(board, django_assert_num_queries):
    leaderboard_rebuild()

    with django_assert_num_queries(1):  # the usernames; the ranking comes from the zset
        assert ranking(leaderboard_top(count=2)) == [(1, "bea", 9), (2, "ada", 5)]
    with django_assert_num_queries(1):
        assert leaderboard_entry(user_id=board["dan"].pk)["rank"] == 4


def test_a_like_applies_to_a_stored_leaderboard(board):
    leaderboard_rebuild()
    dan_post = board["dan"].posts.get()

    like(dan_post)  # dan 5, ties ada and cy: the latest account of the three

    assert leaderboard_entry(user_id=board["dan"].pk)["rank"] == 4
    like(dan_post)
    assert ranking(leaderboard_top(count=3)) == [(1, "bea", 9), (2, "dan", 6), (3, "ada", 5)]


def test_a_like_does_not_create_a_missing_leaderboard_but_moves_the_version(board, cache_redis):
    like(board["eve"].posts.get())

    assert not cache_redis.exists(keys.leaderboard())
    assert cache_redis.get(keys.leaderboard_version()) == b"1"
    assert 0 < cache_redis.ttl(keys.leaderboard_version()) <= keys.LEADERBOARD_TTL
    # The reader's rebuild includes it.
    assert leaderboard_entry(user_id=board["eve"].pk)["likes"] == 2


def test_an_unlike_to_zero_removes_the_person_from_the_board(board, cache_redis):
    leaderboard_rebuild()
    eve_post = board["eve"].posts.get()
    Post.objects.filter(pk=eve_post.pk).update(like_count=0)

    leaderboard_like_changed(author_id=board["eve"].pk, delta=-1)

    assert leaderboard_entry(user_id=board["eve"].pk) is None
    assert cache_redis.zcard(keys.leaderboard()) == 4


def test_a_rebuild_racing_a_like_does_not_overwrite_the_increment(board, monkeypatch):
    leaderboard_rebuild()
    eve_post = board["eve"].posts.get()
    read_database = leaderboard._likes_by_author
    reads = []

    def read_then_a_like_lands(**kwargs):
        rows = read_database(**kwargs)
        reads.append(rows)
        if len(reads) == 1:
            like(eve_post)  # committed after our read, before our EXEC
        return rows

    monkeypatch.setattr(leaderboard, "_likes_by_author", read_then_a_like_lands)

    leaderboard_rebuild()

    assert len(reads) == 2  # the first EXEC was aborted by the WATCH
    assert metrics.value("cache.rebuild_raced", family=leaderboard.LEADERBOARD_FAMILY) == 1
    monkeypatch.undo()
    assert leaderboard_entry(user_id=board["eve"].pk)["likes"] == 2


def test_a_rebuild_that_keeps_racing_likes_gives_up_and_readers_answer_from_the_database(
    board, cache_redis, monkeypatch
):
    eve_post = board["eve"].posts.get()
    read_database = leaderboard._likes_by_author
    reads = []

    def read_then_a_like_lands(**kwargs):
        rows = read_database(**kwargs)
        reads.append(rows)
        like(eve_post)
        return rows

    monkeypatch.setattr(leaderboard, "_likes_by_author", read_then_a_like_lands)

    top = leaderboard_top(count=10)

    assert len(reads) == leaderboard.REBUILD_ATTEMPTS
    assert not cache_redis.exists(keys.leaderboard())
    # The answer of the last database read: the like that landed after it is not in it.
    assert ranking(top)[-1] == (5, "eve", 3)


def test_with_redis_down_the_leaderboard_comes_from_the_database(board, redis_down):
    leaderboard_like_changed(author_id=board["eve"].pk, delta=1)  # logged, not raised

    assert ranking(leaderboard_top(count=3)) == [(1, "bea", 9), (2, "ada", 5), (3, "cy", 5)]
    assert leaderboard_entry(user_id=board["dan"].pk)["rank"] == 4
    assert [e["username"] for e in leaderboard_around(user_id=board["eve"].pk, radius=1)] == ["dan", "eve"]
    # Each of the four calls found the cache role down, and counted it.
    assert metrics.value("cache.error", family=leaderboard.LEADERBOARD_FAMILY) == 4
