"""The jobs app's tables: Job (the outbox and durable record of every job) and Report (a built file)."""

import uuid

from django.conf import settings
from django.db import models


class Job(models.Model):
    """A background job's durable record, written in the same transaction as the request.

    It is the outbox: the job reaches RQ after commit, and a scheduled job sets
    `enqueued_at` once it sees RQ holds the job, or pushes it again if RQ does not (Redis
    was away, the process died), so no job is lost. Its id is the RQ job id. It also
    records the owner (who may see the job) and completion (so a job RQ runs twice acts once).
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        REPORT = "report", "Activity report"
        FANOUT = "fanout", "Timeline fan-out"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="jobs")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Set when RQ gives up on the job (no retries left), so it stops counting as in flight.
    failed_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    # A person asked for it: it counts toward their quota (jobs.queues.QUOTAS).
    requested = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(enqueued_at=None), name="jobs_job_outbox"),
            models.Index(
                fields=["owner", "kind", "created_at"], condition=models.Q(requested=True), name="jobs_job_quota"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk}"


class Report(models.Model):
    """An activity report file, one per report job (the job id makes a re-run idempotent)."""

    job = models.OneToOneField(Job, primary_key=True, on_delete=models.CASCADE, related_name="report")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports")
    file = models.FileField(upload_to="reports/")
    summary = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Report {self.pk}"
