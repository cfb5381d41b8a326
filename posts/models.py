"""Posts, likes and standing pages: the rows the posts app's caches copy.

like_count and view_count are denormalised counts; the caches (posts.selectors) and
Redis counters (posts.counters) are rebuilt from these rows.
"""

from django.conf import settings
from django.db import models

TITLE_MAX_LENGTH = 200
CONTENT_MAX_LENGTH = 10_000


class Post(models.Model):
    """A post by an author, with its like and flushed view counts.

    Made by posts.services.post_create (site, API, admin, demo data); posts.signals
    drops its caches on every save and delete, from any code path.
    """

    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="posts")
    title = models.CharField(max_length=TITLE_MAX_LENGTH)
    content = models.TextField(max_length=CONTENT_MAX_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Denormalised counts. like_count moves with Like rows in the same transaction;
    # view_count holds the views flushed from Redis (posts.counters), so the live
    # figure is view_count plus what Redis has not flushed yet.
    like_count = models.PositiveIntegerField(default=0)
    view_count = models.PositiveBigIntegerField(default=0)

    # Not a column. True on a post made by posts.services.post_create, which writes it
    # through to the caches after commit; for a row made any other way (a shell, a
    # fixture) posts.signals drops what its arrival makes stale instead.
    written_through = False

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["author", "-created_at"], name="posts_author_recent")]

    def __str__(self) -> str:
        return self.title


class Like(models.Model):
    """One person's like of one post (at most one: posts_like_once).

    Created and deleted with Post.like_count in one transaction (posts.services).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="likes")
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="likes")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "post"], name="posts_like_once")]

    def __str__(self) -> str:
        return f"{self.user_id} likes {self.post_id}"


class Page(models.Model):
    """A standing page of the site (about, guidelines), with a view counter.

    The reference article's `/api/pages/:id`: every read is a view (posts.counters);
    view_count holds the views flushed from Redis.
    """

    slug = models.SlugField(max_length=50, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField()
    view_count = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title
