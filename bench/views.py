"""Floor views, and the reference article's naive read of a post: what Kestrel is measured against.

Every path is measured as a ratio to these, so the figures say what Kestrel's own
code adds, not how fast this machine is. Also the reader of each worker's in-process
counters (core.metrics), which the harness uses to tell cache hits from misses.
"""

from __future__ import annotations

import os

from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django_redis import get_redis_connection
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import metrics
from posts.models import Post

# The article caches for a fixed time and never invalidates; 300 s is django-redis's default TTL.
NAIVE_TTL = 300
# The raw client of the state role (CACHES["sessions"]), where Kestrel keeps its counters too.
NAIVE_COUNTER_ALIAS = "sessions"


def naive_post_key(post_id: int) -> str:
    """STRING (django-redis JSON), cache role, NAIVE_TTL: the naive read's copy of a post."""
    return f"naive:post:{post_id}"


def naive_views_key(post_id: int) -> str:
    """STRING (integer), state role, no TTL: the article's view counter, one INCR per read."""
    return f"naive:post:{post_id}:views"


class FloorApi(APIView):
    """DRF with nothing to do: no authentication (so the session is never read) and no permissions."""

    authentication_classes = []
    permission_classes = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


def django_floor(request: HttpRequest) -> JsonResponse:
    """Plain Django through the same middleware, without DRF's request and response wrapping."""
    return JsonResponse({"ok": True})


def _naive_post(post_id: int) -> dict | None:
    # The article's cache-aside (part 2.1): GET; on a miss the row, cached as it is
    # (JSON.stringify of the row: a plain dict, no ModelSerializer), SET with a TTL.
    # No lease, no jitter, no L1, no negative caching, no invalidation.
    key = naive_post_key(post_id)
    post = cache.get(key)
    if post is None:
        row = Post.objects.select_related("author").filter(pk=post_id).first()
        if row is None:
            return None
        post = {
            "id": row.pk,
            "title": row.title,
            "content": row.content,
            "author": {"id": row.author_id, "username": row.author.username},
            "createdAt": row.created_at.isoformat(),
            "updatedAt": row.updated_at.isoformat(),
            "likeCount": row.like_count,
            "viewCount": row.view_count,
        }
        cache.set(key, post, NAIVE_TTL)
    return post


class NaivePostApi(APIView):
    """GET /bench/naive/posts/{id}: the article's read of a post, with the floor's empty auth and permissions."""

    authentication_classes = []
    permission_classes = []

    def get(self, request: Request, post_id: int) -> Response:
        post = _naive_post(post_id)
        if post is None:
            return Response({"error": "Post not found"}, status=404)
        return Response(post)


class NaiveCountedPostApi(NaivePostApi):
    """The same plus the article's view counter (part 6.3): one INCR per read, on the raw client."""

    def get(self, request: Request, post_id: int) -> Response:
        post = _naive_post(post_id)
        if post is None:
            return Response({"error": "Post not found"}, status=404)
        views = get_redis_connection(NAIVE_COUNTER_ALIAS).incr(naive_views_key(post_id))
        return Response({**post, "views": views})


def worker_metrics(request: HttpRequest) -> JsonResponse:
    """This worker's core.metrics counters and pid: the harness reads every worker's
    around a timed run to count cache hits, misses and loads (bench.harness.worker_metrics)."""
    series = [[name, labels, count] for name, rows in metrics.snapshot().items() for labels, count in rows]
    return JsonResponse({"pid": os.getpid(), "series": series})
