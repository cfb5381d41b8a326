"""Writes of the jobs app: enqueue through the outbox, hold people to quotas, send email, mark jobs done.

Every job starts as a `Job` row in the caller's transaction and is pushed to RQ (queue
role) after commit, the row's id as its RQ id; `outbox_drain` pushes what a push missed
(Redis away: the push fails open, counted as jobs.push_failed). Job functions act once
per row (`completed_at`). A person's quota is counted from the rows, under their row lock.
"""

from __future__ import annotations

import logging
import smtplib
import unicodedata
from contextlib import nullcontext
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import django_rq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.mail import BadHeaderError, send_mail
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from redis import Redis
from rq import Callback, Retry
from rq.job import Job as RQJob

from core import metrics
from core.commit import after_commit
from core.redis import UNAVAILABLE_ERRORS, fail_open, get_redis
from jobs.models import Job, Report
from jobs.queues import (
    EMAIL_JOB,
    JOB_RETENTION,
    POLICIES,
    PURGE_BATCH,
    QUOTA_WINDOW,
    QUOTAS,
    REPORT_JOB,
    REPORT_RETENTION,
)
from jobs.selectors import job_payload_to_run

if TYPE_CHECKING:
    # settings.AUTH_USER_MODEL as django-stubs resolves it (core.types): jobs imports no app.
    from django.contrib.auth.models import _User

logger = logging.getLogger(__name__)

OUTBOX_GRACE = timedelta(seconds=30)  # a row this old and still unpushed missed its on_commit push
_JOB_META = Job._meta
# jobs_job's names, as jobs/migrations create them (tests/jobs fail on a rename or a new column).
# A new row: what job.save() sends, the columns a new job leaves empty written as NULL.
_JOB_INSERT_SQL = (
    "INSERT INTO jobs_job (id, kind, owner_id, payload, created_at, requested, "
    "enqueued_at, completed_at, failed_at, result) VALUES (%s, %s, %s, %s, %s, %s, NULL, NULL, NULL, NULL)"
)
_JOB_COLUMNS = {field.name: field for field in _JOB_META.concrete_fields}
_JOB_INSERT_FIELDS = [_JOB_COLUMNS[name] for name in ("id", "kind", "owner", "payload", "created_at", "requested")]
_JOB_EMPTY_FIELDS = [_JOB_COLUMNS[name] for name in ("enqueued_at", "completed_at", "failed_at", "result")]
# A person's jobs of a kind in the quota window, and those still in flight (jobs_job_quota).
_QUOTA_SQL = (
    "SELECT COUNT(CASE WHEN created_at >= %s THEN 1 END), "
    "COUNT(CASE WHEN created_at >= %s AND completed_at IS NULL AND failed_at IS NULL THEN 1 END) "
    "FROM jobs_job WHERE owner_id = %s AND kind = %s AND requested AND created_at >= %s"
)
_JOB_COMPLETE_SQL = "UPDATE jobs_job SET completed_at = %s, result = %s WHERE id = %s AND completed_at IS NULL"


class PermanentJobError(Exception):
    """A failure that retrying cannot fix (a refused address, a bad header): the job fails at once."""


class QuotaExceeded(Exception):
    """The person has asked for as many jobs of this kind as their quota allows, for now."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until asking again can succeed


# --- Enqueueing ------------------------------------------------------------------------


def job_enqueue(
    *, kind: str, owner: _User | None, payload: dict[str, Any], requested: bool = False, now: datetime | None = None
) -> Job:
    """Record the job now; push it to RQ once the surrounding transaction commits.

    `requested`: a person asked for it, so it counts toward the owner's quota, and
    QuotaExceeded is raised (nothing recorded) when the quota is used up.
    """
    counted = owner if requested and kind in QUOTAS else None  # whose quota this job counts toward
    # The count and the row are one transaction; a row alone is one statement, which needs
    # no transaction of its own (BEGIN and COMMIT would cost it as much again on SQLite).
    with transaction.atomic() if counted is not None else nullcontext():
        if counted is not None:
            _quota_check(kind=kind, owner=counted, now=now or timezone.now())
        job = Job(kind=kind, owner=owner, payload=payload, requested=requested)
        _job_insert(job)
        after_commit(_push, job)
    return job


def _job_insert(job: Job) -> None:
    """INSERT the new row `job`: what job.save() sends, in plain SQL (the ORM took longer
    to build the statement than the database to run it, on every enqueue)."""
    values = [field.get_db_prep_save(field.pre_save(job, True), connection) for field in _JOB_INSERT_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_JOB_INSERT_SQL, values)
    job._state.adding = False
    job._state.db = connection.alias


def _quota_check(*, kind: str, owner: _User, now: datetime) -> None:
    """Raise QuotaExceeded if `owner` may not ask for another `kind` job now. Call it in
    the transaction that records the job: it takes the owner's row lock."""
    quota = QUOTAS[kind]
    # The lock orders this person's concurrent requests: the next one counts after this
    # one's row is committed. SQLite has no row locks: its IMMEDIATE transaction already
    # holds the database's write lock, so the query would only cost time.
    if transaction.get_connection().features.has_select_for_update:
        list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk", flat=True))
    window_start = now - timedelta(seconds=QUOTA_WINDOW)
    # A job that never finished stops counting as in flight after the longest it can live
    # (its worker died and RQ lost it, or it failed before failed_at could be written).
    horizon = now - timedelta(seconds=POLICIES[kind].longest_life)
    # Both counts from one indexed read of the few rows that can count (jobs_job_quota),
    # in plain SQL: the ORM took several times longer to build the query than to run it.
    prep = _JOB_META.get_field("created_at").get_db_prep_value
    with connection.cursor() as cursor:
        since = min(window_start, horizon)
        params = [prep(window_start, connection), prep(horizon, connection), owner.pk, kind, prep(since, connection)]
        cursor.execute(_QUOTA_SQL, params)
        recent, busy = cursor.fetchone()
    if quota.in_flight is not None and busy >= quota.in_flight:
        what = "A report is" if kind == REPORT_JOB else "A job of this kind is"
        raise QuotaExceeded(
            f"{what} already being built; wait for it to finish before asking for another.",
            retry_after=quota.busy_retry_after,
        )
    if recent >= quota.per_window:
        # A slot frees when the oldest counted job leaves the window (read only when refusing).
        oldest = (
            Job.objects.filter(owner=owner, kind=kind, requested=True, created_at__gte=window_start)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        # None only if the counted rows went meanwhile: then a slot is free already.
        retry_after = (
            1 if oldest is None else max(1, int((oldest + timedelta(seconds=QUOTA_WINDOW) - now).total_seconds()) + 1)
        )
        label = "reports" if kind == REPORT_JOB else "emails" if kind == EMAIL_JOB else f"{kind} jobs"
        raise QuotaExceeded(
            f"You have asked for {quota.per_window} {label} in the last hour, the most Kestrel allows; "
            f"try again in {_minutes(retry_after)}.",
            retry_after=retry_after,
        )


def _minutes(seconds: int) -> str:
    minutes = -(-seconds // 60)
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


SUBJECT_INVALID = "The subject must be one line of text, without line breaks or control characters."


def email_subject_errors(subject: str) -> list[str]:
    """Why `subject` cannot be a mail header ([] if it can).

    A line break in a header would let the sender add headers of their own (Bcc:), and
    Django refuses it only at send time; refusing every control character and Unicode
    line separator also covers what mail software other than Django may split lines on.
    """
    if any(unicodedata.category(char) in {"Cc", "Zl", "Zp"} for char in subject):
        return [SUBJECT_INVALID]
    return []


def email_enqueue(
    *, to: str, subject: str, body: str, owner: _User | None, requested: bool = True, now: datetime | None = None
) -> Job:
    """Queue an email; ValidationError ({"subject": [...]}) for a subject that cannot be a header.

    `requested=False` for Kestrel's own mail (a welcome, "your report is ready"), which
    no person asked for and which no quota holds back.
    """
    if errors := email_subject_errors(subject):
        raise ValidationError({"subject": errors})
    payload = {"to": to, "subject": subject, "body": body}
    return job_enqueue(kind=EMAIL_JOB, owner=owner, payload=payload, requested=requested, now=now)


def job_push(*, job_id: UUID | str) -> bool:
    """Hand a recorded job to RQ (again). False if there is no such row or Redis is away."""
    job = Job.objects.filter(pk=job_id).first()
    return job is not None and _push(job)


def _push(job: Job) -> bool:
    # Straight after commit the caller's row is current: no need to read it back.
    policy = POLICIES[job.kind]
    # The row is committed: the outbox drain pushes it once Redis is back.
    with fail_open(
        "jobs.push_failed",
        "Could not enqueue %s job %s; left in the outbox",
        job.kind,
        job.pk,
        log=logger,
        kind=job.kind,
    ) as outcome:
        # commit_mode="auto": this already runs after commit, so enqueue right now.
        queue = django_rq.get_queue(policy.queue, commit_mode="auto")
        # One MULTI for all of RQ's writes: without a pipeline RQ sends two round trips.
        with queue.connection.pipeline() as pipe:
            queue.enqueue(
                policy.func,
                str(job.pk),
                job_id=str(job.pk),
                job_timeout=policy.timeout,
                result_ttl=policy.result_ttl,
                failure_ttl=policy.failure_ttl,
                retry=Retry(max=policy.retries, interval=policy.retry_intervals()),
                on_failure=Callback(fail_fast_on_permanent_errors),
                meta={"owner_id": job.owner_id, "kind": job.kind},
                pipeline=pipe,
            )
            pipe.execute()
    if outcome.failed:
        return False
    metrics.incr("jobs.enqueued", kind=job.kind)
    return True


def outbox_drain(*, now: datetime | None = None, batch: int = 500) -> int:
    """Mark the rows RQ holds as enqueued and push those it does not; returns how many it pushed.

    Rows younger than OUTBOX_GRACE are left to their own push after commit. Per batch:
    one pipeline of EXISTS, the pushes, one UPDATE. A row that already ran counts as
    held (RQ may have let its record expire). Stops at the first push Redis refuses.
    """
    now = now or timezone.now()
    cutoff = now - OUTBOX_GRACE
    pushed = 0
    while True:
        rows = list(Job.objects.filter(enqueued_at=None, created_at__lt=cutoff).order_by("created_at")[:batch])
        if not rows:
            return pushed
        try:
            with get_redis("queue").pipeline(transaction=False) as pipe:
                for job in rows:
                    pipe.exists(RQJob.key_for(str(job.pk)))
                held = pipe.execute()
        except UNAVAILABLE_ERRORS as exc:
            logger.warning("Outbox drain: Redis is away (%s); the next run tries again", exc)
            return pushed
        confirmed = []
        for job, in_rq in zip(rows, held, strict=True):
            if not (in_rq or job.completed_at or job.failed_at):
                if not _push(job):
                    break  # Redis still away: the next run tries again
                pushed += 1
            confirmed.append(job.pk)
        Job.objects.filter(pk__in=confirmed).update(enqueued_at=now)
        if len(confirmed) < len(rows) or len(rows) < batch:
            return pushed


def jobs_purge(*, now: datetime | None = None, batch: int = PURGE_BATCH) -> dict[str, int]:
    """Delete what is past its retention (jobs.queues): reports (file, then rows) and old job rows.

    Idempotent and bounded: at most `batch` reports and `batch` job rows a run, oldest
    first; what is left goes in the next run. A run cut short between a file and its
    rows leaves the rows, and the next run deletes them (a missing file is no error).
    """
    now = now or timezone.now()
    expired = list(
        Report.objects.filter(created_at__lt=now - timedelta(seconds=REPORT_RETENTION))
        .order_by("created_at")
        .values_list("pk", "file")[:batch]
    )
    for _, name in expired:
        if name:
            default_storage.delete(name)
    # The job row goes with its report (the report's row cascades with it).
    Job.objects.filter(pk__in=[job_id for job_id, _ in expired]).delete()
    old_jobs = list(
        Job.objects.filter(created_at__lt=now - timedelta(seconds=JOB_RETENTION), enqueued_at__isnull=False)
        .order_by("created_at")
        .values_list("pk", flat=True)[:batch]
    )
    Job.objects.filter(pk__in=old_jobs).delete()
    if expired or old_jobs:
        logger.info("Purged %s expired reports and %s old job rows", len(expired), len(old_jobs))
    return {"reports": len(expired), "jobs": len(old_jobs)}


def fail_fast_on_permanent_errors(
    job: RQJob,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ on_failure callback: runs before RQ decides to retry; a permanent error uses up the retries.

    A job with no retry left is failed for good: its row says so, so that it stops
    counting toward its owner's jobs in flight.
    """
    if exc_type is not None and issubclass(exc_type, PermanentJobError):
        job.retries_left = 0
    if not job.retries_left:
        try:
            Job.objects.filter(pk=job.id, completed_at=None).update(failed_at=timezone.now())
        except DatabaseError:
            # Only the in-flight count depends on it, and that forgets the job later anyway.
            logger.warning("Could not mark job %s failed", job.id, exc_info=True)


# --- The work itself ----------------------------------------------------------------------


def job_complete(*, job_id: UUID | str, result: dict[str, Any]) -> bool:
    """Mark the job done; False if another run already did (RQ runs a job at least once).

    One conditional UPDATE whose row count says whether this run completed the job, in
    plain SQL: the ORM took several times longer to build it than the database to run it.
    """
    params = [
        _JOB_META.get_field("completed_at").get_db_prep_save(timezone.now(), connection),
        _JOB_META.get_field("result").get_db_prep_save(result, connection),
        _JOB_META.pk.get_db_prep_save(job_id, connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_JOB_COMPLETE_SQL, params)
        return cursor.rowcount == 1


def email_send(*, job_id: UUID | str) -> dict[str, Any]:
    """Send job `job_id`'s email unless a run already did, then mark the job done.

    A refused address or a bad header fails the job at once (PermanentJobError); other
    errors propagate and RQ retries with backoff (jobs.queues.POLICIES).
    """
    payload = job_payload_to_run(job_id=job_id)
    if payload is None:
        return {"sent": False, "reason": "already sent"}
    try:
        send_mail(payload["subject"], payload["body"], settings.DEFAULT_FROM_EMAIL, [payload["to"]])
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentJobError(f"Address refused: {payload['to']}") from exc
    except BadHeaderError as exc:
        # The same message fails the same way every time: retrying cannot help. (Rows
        # queued before email_enqueue refused such subjects, or written another way.)
        raise PermanentJobError(f"Bad header: {exc}") from exc
    result = {"sent": True, "to": payload["to"]}
    job_complete(job_id=job_id, result=result)
    return result
