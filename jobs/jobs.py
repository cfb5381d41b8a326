"""RQ job functions: thin. They take the Job row's id, load it and call a service."""

from __future__ import annotations

from rq import get_current_job

from jobs import services
from jobs.models import Job


def send_email(job_id: str) -> dict:
    return services.email_send(job_id=job_id)


def build_report(job_id: str) -> dict:
    rq_job = get_current_job()

    def progress(done: int, total: int) -> None:
        # Shown live on the reports page through GET /api/jobs/{id}.
        if rq_job is not None:
            rq_job.meta["progress"] = {"done": done, "total": total}
            rq_job.save_meta()

    return services.report_build(job=Job.objects.select_related("owner").get(pk=job_id), progress=progress)


def drain_outbox() -> int:
    """Scheduled (jobs/cron.py): confirm pushed jobs, push those whose push after commit did not happen."""
    return services.outbox_drain()


def purge_expired() -> dict:
    """Scheduled (jobs/cron.py): delete reports and job rows past their retention."""
    return services.jobs_purge()
