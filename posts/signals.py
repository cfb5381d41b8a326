"""Cache invalidation for posts: any save or delete, from any code path (API, site, admin, shell)."""

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


@receiver(post_save, sender=Post, dispatch_uid="posts.post_saved")
def post_saved(sender, instance: Post, created: bool, **kwargs) -> None:
    # A new post may have been remembered as missing (a 404 served just before).
    # Its author's list is written through by posts.services; an edit changes the
    # title shown there, so the list goes too. All of it after commit.
    invalidate("post", instance.pk)
    if not created:
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
