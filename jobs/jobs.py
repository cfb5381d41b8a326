"""RQ job functions: thin. They take the Job row's id, load it and call a service."""

from __future__ import annotations

from jobs import services


def send_email(job_id: str) -> dict:
    """The email job (jobs.queues.POLICIES): send job `job_id`'s mail once."""
    return services.email_send(job_id=job_id)


def drain_outbox() -> int:
    """Scheduled (jobs/cron.py): confirm pushed jobs, push those whose push after commit did not happen."""
    return services.outbox_drain()


def purge_expired() -> dict:
    """Scheduled (jobs/cron.py): delete reports and job rows past their retention."""
    return services.jobs_purge()
