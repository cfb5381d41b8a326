"""Cache upkeep for posts: any save or delete, from any code path (API, site, admin, shell).

All of it after commit: a new post is written through to its author's list and stats
(and drops a 404 cached for its id), an edit or a delete drops what it changed.
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
from posts.selectors import AUTHOR_LISTS
from posts.services import write_through_new_post


@receiver(post_save, sender=Post, dispatch_uid="posts.post_saved")
def post_saved(sender, instance: Post, created: bool, update_fields=None, **kwargs) -> None:
    if created:
        # A 404 remembered before it existed goes, in one round trip with the write-through
        # of its author's list and stats.
        after_commit(write_through_new_post, instance)
        return
    invalidate("post", instance.pk)
    if update_fields is None or "title" in update_fields:  # the list shows titles, not content
        invalidate(AUTHOR_LISTS.name, instance.author_id)


@receiver(post_delete, sender=Post, dispatch_uid="posts.post_deleted")
def post_deleted(sender, instance: Post, **kwargs) -> None:
    invalidate("post", instance.pk)
    invalidate(AUTHOR_LISTS.name, instance.author_id)
    # Unique viewers of a post that is gone (pending views are dropped at their next flush).
    after_commit(_drop_viewers, instance.pk)


def _drop_viewers(post_id: int) -> None:
    get_redis("state").delete(keys.post_viewers(post_id))


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="posts.author_deleted")
def author_deleted(sender, instance, **kwargs) -> None:
    # Their likes left with their posts (a cascade sends no per-like delta): rebuild.
    after_commit(leaderboard_drop)


@receiver(post_save, sender=Page, dispatch_uid="posts.page_saved")
@receiver(post_delete, sender=Page, dispatch_uid="posts.page_deleted")
def page_changed(sender, instance: Page, **kwargs) -> None:
    invalidate("page", instance.pk)
