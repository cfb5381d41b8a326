"""Cache invalidation for posts: any save or delete, from any code path (API, site, admin, shell).

All of it after commit: an edit or a delete drops what it changed. A new post is
written through to the caches by posts.services.post_create, the one way posts are
made; a row made any other way (a shell, a fixture) drops what its arrival makes stale.
"""

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from core.cacheaside import invalidate
from core.commit import after_commit
from core.redis import get_redis
from posts import keys
from posts.leaderboard import leaderboard_drop
from posts.models import Page, Post
from posts.selectors import PAGE, POST, USER_POSTS


@receiver(post_save, sender=Post, dispatch_uid="posts.post_saved")
def post_saved(sender, instance: Post, created: bool, update_fields=None, **kwargs) -> None:
    """On a post's save: drop what it made stale, once the transaction commits.

    A new post from post_create is written through already; one made any other way
    drops its cached 404 and its author's list. An edit drops the post's entry, and the
    author's list when the title may have changed.
    """
    if created:
        if not instance.written_through:
            # Nothing wrote it through: a 404 remembered before it existed goes, and so do
            # its author's list and stats, which the next read rebuilds with it.
            invalidate(POST.name, instance.pk)
            invalidate(USER_POSTS.name, instance.author_id)
        return
    invalidate(POST.name, instance.pk)
    if update_fields is None or "title" in update_fields:  # the list shows titles, not content
        invalidate(USER_POSTS.name, instance.author_id)


@receiver(post_delete, sender=Post, dispatch_uid="posts.post_deleted")
def post_deleted(sender, instance: Post, **kwargs) -> None:
    """On a post's delete: drop its entry and its author's list, once the transaction commits.

    Its unique-viewer HyperLogLog (state role, no TTL) goes too, after commit; pending
    views are dropped at their next flush.
    """
    invalidate(POST.name, instance.pk)
    invalidate(USER_POSTS.name, instance.author_id)
    after_commit(_drop_viewers, instance.pk)


def _drop_viewers(post_id: int) -> None:
    get_redis("state").delete(keys.post_viewers(post_id))


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="posts.author_deleted")
def author_deleted(sender, instance, **kwargs) -> None:
    """On an account's delete: drop the leaderboard after commit, so the next read rebuilds it.

    Their posts' likes left in a cascade, which sends no per-like delta.
    """
    after_commit(leaderboard_drop)


@receiver(post_save, sender=Page, dispatch_uid="posts.page_saved")
@receiver(post_delete, sender=Page, dispatch_uid="posts.page_deleted")
def page_changed(sender, instance: Page, **kwargs) -> None:
    """On a page's save or delete: drop its cached copy (family PAGE) after commit.

    core.cacheaside.invalidate runs after commit and is outbox-backed.
    """
    invalidate(PAGE.name, instance.pk)
