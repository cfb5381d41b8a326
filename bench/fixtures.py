"""Data the HTTP scenarios read, created inside a Django child process.

The harness never imports Django; it runs these through `manage.py shell -c` (see
bench.scenarios) and reads the JSON each prints on its last line of output.
"""

from __future__ import annotations

import json

from accounts.models import User
from posts.models import Post
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
