"""The people and things the load run (bench/load.py) works with, made inside a Django child.

    manage.py shell -c "from bench.load_data import seed; seed(users=40, posts=10, follows=5, pages=5)"

Everything goes through Kestrel's services (follows, posts with their write-through and
fan-out), so the caches, timelines and follow mirrors start as production's would.
People get an unusable password (no hashing, and nobody logs in with one) and an access
token each, issued by accounts.tokens.token_pair_issue (what POST /api/token calls):
the load signs in with those. Prints the ids and tokens as JSON on its last line.
"""

from __future__ import annotations

import json

from django.contrib.auth.hashers import make_password
from django.db import transaction

from accounts.models import User
from accounts.tokens import token_pair_issue
from feeds.services import follow_create
from posts.models import Page
from posts.services import post_create

# About the size of a real post.
CONTENT = (
    "A post long enough to look like one: a few sentences about Redis round trips, "
    "connection pools and why a cache hit still costs a network hop. " * 3
).strip()


def seed(*, users: int, posts: int, follows: int, pages: int) -> None:
    unusable = make_password(None)
    people = User.objects.bulk_create(
        User(username=f"load{n}", email=f"load{n}@example.com", name=f"Load Tester {n}", password=unusable)
        for n in range(users)
    )
    # Each follows the next `follows` people round the circle: every home timeline has posts.
    followed = []
    for i, follower in enumerate(people):
        for step in range(1, follows + 1):
            followee = people[(i + step) % users]
            follow_create(follower=follower, followee=followee)
            followed.append([follower.pk, followee.pk])
    post_ids: dict[int, list[int]] = {}
    for person in people:
        post_ids[person.pk] = [
            post_create(author=person, title=f"Post {n} by {person.username}", content=CONTENT).pk for n in range(posts)
        ]
    with transaction.atomic():
        page_ids = [
            Page.objects.create(slug=f"load-{n}", title=f"Standing page {n}", body=CONTENT).pk for n in range(pages)
        ]
    print(
        json.dumps(
            {
                "users": [{"id": person.pk, "token": token_pair_issue(user=person).access} for person in people],
                "posts": post_ids,
                "follows": followed,
                "pages": page_ids,
            }
        )
    )
