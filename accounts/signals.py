"""Cache invalidation for users: any save or delete, from any code path."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from accounts.models import User
from core.cacheaside import invalidate


@receiver(post_save, sender=User, dispatch_uid="accounts.user_saved")
@receiver(post_delete, sender=User, dispatch_uid="accounts.user_deleted")
def drop_cached_profile(sender, instance: User, **kwargs) -> None:
    # After commit (inside invalidate), never inside the transaction.
    invalidate("user", instance.pk)
