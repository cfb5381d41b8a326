"""The jobs app: the queue (outbox, policies, quotas, worker, job status); it knows no other app."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The jobs app ("Background jobs" in the admin)."""

    name = "jobs"
    verbose_name = "Background jobs"
