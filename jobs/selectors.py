"""Reads of the jobs app: a job's status, from RQ while it lives there, else from its row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from django.db import connection
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus

from core.redis import UNAVAILABLE_ERRORS, get_redis
from jobs.models import Job, Report

if TYPE_CHECKING:
    # settings.AUTH_USER_MODEL as django-stubs resolves it (core.types): jobs imports no app.
    from django.contrib.auth.models import _User

# jobs_job's names, as jobs/migrations create them (a rename breaks tests/jobs at once).
_JOB_TO_RUN_SQL = "SELECT completed_at IS NULL, payload FROM jobs_job WHERE id = %s"


def job_for(*, job_id: UUID | str, user: _User) -> Job | None:
    """The job if `user` may see it (its owner or staff), else None."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or not (user.is_staff or job.owner_id == user.pk):
        return None
    return job


def job_payload_to_run(*, job_id: UUID | str) -> dict[str, Any] | None:
    """The payload of job `job_id` if no run has completed it yet, else None; Job.DoesNotExist if no such row.

    What a job reads before it acts (jobs.services.job_complete marks it done after),
    in plain SQL: the ORM took several times longer to build the query than to run it.
    """
    meta = Job._meta
    with connection.cursor() as cursor:
        cursor.execute(_JOB_TO_RUN_SQL, [meta.pk.get_db_prep_value(job_id, connection)])
        row = cursor.fetchone()
    if row is None:
        raise Job.DoesNotExist(f"No job {job_id}")
    to_run, payload = row
    if not to_run:
        return None
    field = meta.get_field("payload")
    # The expression the ORM passes for a plain column read (its Col).
    return field.from_db_value(payload, field.cached_col, connection)


def job_status(*, job: Job) -> dict[str, Any]:
    """{"jobId", "kind", "status", "progress", "result", "error"} for the API and the reports page.

    RQ keeps a job for result_ttl after it ends; the row keeps completion for good. A row
    RQ does not hold is pending until the outbox drain has confirmed it, then expired.
    """
    body = {"jobId": str(job.pk), "kind": job.kind, "createdAt": job.created_at.isoformat()}
    if job.completed_at is not None:
        return {**body, "status": "finished", "progress": None, "result": job.result, "error": None}
    try:
        rq_job = RQJob.fetch(str(job.pk), connection=get_redis("queue"))
    except NoSuchJobError:
        status = "pending" if job.enqueued_at is None else "expired"
        return {**body, "status": status, "progress": None, "result": None, "error": None}
    except UNAVAILABLE_ERRORS:
        return {**body, "status": "unknown", "progress": None, "result": None, "error": "Queue unavailable"}
    status = rq_job.get_status(refresh=False)
    error = None
    # One read of the latest result: a second could find it expired (None).
    if status == "failed" and (latest := rq_job.latest_result()) is not None:
        last_line = (latest.exc_string or "").strip().splitlines()[-1:]
        error = last_line[0] if last_line else "Failed"
    return {
        **body,
        "status": status.value if isinstance(status, JobStatus) else str(status),
        "progress": rq_job.meta.get("progress"),
        "result": None,
        "error": error,
        "retriesLeft": rq_job.retries_left,
    }


def report_for(*, job_id: UUID, user: _User) -> Report | None:
    """The report of job `job_id` if `user` may download it (its owner or staff), else None."""
    report = Report.objects.filter(pk=job_id).first()
    if report is None or not (user.is_staff or report.owner_id == user.pk):
        return None
    return report


def reports_of(*, user: _User, limit: int = 10) -> list[Job]:
    """The user's last `limit` report jobs, newest first (the reports page)."""
    return list(Job.objects.filter(owner=user, kind=Job.Kind.REPORT).order_by("-created_at")[:limit])
