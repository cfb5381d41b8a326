from django.db import models


class PendingInvalidation(models.Model):
    """An invalidation that could not reach Redis, replayed by a scheduled job
    (core.jobs.replay_invalidations) so no stale copy outlives the outage."""

    family = models.CharField(max_length=50)
    obj_id = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.family}:{self.obj_id}"
