"""RQ job functions of the feeds app: thin. They take the Job row's id and call a service."""

from __future__ import annotations

from feeds import services
from jobs.models import Job


def fanout_post(job_id: str) -> dict:
    """A popular author's new post, to every follower's timeline (jobs.queues FANOUT_JOB)."""
    return services.timeline_fanout_run(job=Job.objects.get(pk=job_id))
