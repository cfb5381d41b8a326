"""Data the HTTP scenarios read, created inside a Django child process.

The harness never imports Django; it runs these through `manage.py shell -c` (see
bench.scenarios) and reads the JSON each prints on its last line of output.
"""

from __future__ import annotations

import json
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.hashers import make_password

from accounts.models import User
from feeds.services import follow_create
from posts.models import Post
from posts.selectors import home_timeline_page
from posts.services import post_create

# About the size of a real post, so the cached JSON and the row are not toy-sized.
TITLE = "Benchmarking cache-aside with an in-process L1"
CONTENT = (
    "A post long enough to look like one: a few sentences about Redis round trips, "
    "connection pools and why a cache hit still costs a network hop. " * 4
).strip()


def _author() -> User:
    # The one user bench.harness.create_user made.
    return User.objects.order_by("pk").first()


def hot_post() -> None:
    """One post created through the service (write-through and invalidation included)."""
    post = post_create(author=_author(), title=TITLE, content=CONTENT)
    print(json.dumps({"id": post.pk}))


def cold_posts(count: int) -> None:
    """`count` posts in bulk: fast, and bypasses the write-through, which reads here do not need."""
    author = _author()
    created = Post.objects.bulk_create(
        (Post(author=author, title=f"{TITLE} #{n}", content=CONTENT) for n in range(count)), batch_size=1000
    )
    print(json.dumps({"ids": [post.pk for post in created]}))


def _unusable_users(prefix: str, count: int) -> list[User]:
    """`count` users in bulk, with an unusable password: nobody logs in as them with one,
    so no password is hashed (a few hundred milliseconds each, by design)."""
    unusable = make_password(None)
    return User.objects.bulk_create(
        (User(username=f"{prefix}{n}", email=f"{prefix}{n}@example.com", password=unusable) for n in range(count)),
        batch_size=1000,
    )


def feed_timeline(*, authors: int, posts: int) -> None:
    """The benchmark user follows `authors` new people, who then write `posts` posts between them.

    Everything goes through the services, in the order a reader meets it: the follows
    (feeds.services.follow_create), a first read that builds the reader's timeline
    from the database (still empty), then each post (posts.services.post_create),
    whose fan-out after commit appends it to that timeline. The reader's first page
    is checked before the JSON is printed.
    """
    reader = _author()
    people = _unusable_users(f"feed-author-{reader.pk}-", authors)
    for person in people:
        follow_create(follower=reader, followee=person)
    home_timeline_page(user_id=reader.pk, count=1)
    for n in range(posts):
        post_create(author=people[n % authors], title=f"{TITLE} #{n}", content=CONTENT)
    page = home_timeline_page(user_id=reader.pk, count=posts)
    print(json.dumps({"reader": reader.pk, "authors": authors, "items": len(page["items"])}))


def stream_sessions(*, count: int) -> None:
    """`count` users, each logged in: a session written straight into the session store.

    What django.contrib.auth.login stores, without a log-in request per user (each
    would hash a password). Prints [[user id, session key], ...].
    """
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    backend = settings.AUTHENTICATION_BACKENDS[0]
    sessions = []
    for user in _unusable_users(f"stream-{_author().pk}-", count):
        store = store_class()
        store[SESSION_KEY] = user._meta.pk.value_to_string(user)
        store[BACKEND_SESSION_KEY] = backend
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        sessions.append([user.pk, store.session_key])
    print(json.dumps({"sessions": sessions}))


def poster(*, followers: int) -> None:
    """A person followed by `followers` others whose home timelines exist, and their access token.

    The follows go through feeds.services.follow_create, and each follower's timeline is
    built from the database (posts.selectors.home_timeline_page), as a follower who reads the site
    has one: the fan-out of each new post then appends to every one of them (it skips
    timelines that do not exist). Each timeline keeps its newest STREAM_MAXLEN entries,
    so the posts a load creates leave Redis bounded. Prints {"id", "followers", "access"}.
    """
    from accounts.tokens import token_pair_issue  # here: only the write scenarios need it

    author = _unusable_users(f"poster-{_author().pk}-", 1)[0]
    people = _unusable_users(f"poster-{author.pk}-follower-", followers)
    for person in people:
        follow_create(follower=person, followee=author)
        home_timeline_page(user_id=person.pk, count=1)
    print(json.dumps({"id": author.pk, "followers": len(people), "access": token_pair_issue(user=author).access}))


def like_posts(count: int) -> None:
    """`count` posts in bulk by a new person, for the benchmark user to like, one like each."""
    author = _unusable_users(f"liked-{_author().pk}-", 1)[0]
    created = Post.objects.bulk_create(
        (Post(author=author, title=f"{TITLE} #{n}", content=CONTENT) for n in range(count)), batch_size=1000
    )
    print(json.dumps({"ids": [post.pk for post in created]}))


def access_token() -> None:
    """An access token for the benchmark user, from the service POST /api/token calls (its
    lifetime is JWT_ACCESS_LIFETIME of this process's environment)."""
    from accounts.tokens import token_pair_issue  # here: only the bearer-token scenarios need it

    print(json.dumps({"access": token_pair_issue(user=_author()).access}))
