"""What the job APIs answer, shared with the apps whose APIs queue jobs for people (posts' reports)."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from jobs.services import QuotaExceeded

# The 202 of a request that queued a job, for the schema only: the views return plain dicts.
JobQueuedSerializer = inline_serializer(
    "JobQueued",
    {
        "jobId": serializers.UUIDField(),
        "message": serializers.CharField(),
        "status": serializers.CharField(required=False, help_text="where to follow the job"),
    },
)


def quota_exceeded(exc: QuotaExceeded) -> Response:
    """429 with the wait, as for a rate limit: the person's quota (jobs.queues.QUOTAS) is used up."""
    return Response(
        {"error": str(exc)}, status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(exc.retry_after)}
    )
