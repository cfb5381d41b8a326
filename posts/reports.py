"""Activity reports: a person's posts with their views and likes, as a CSV built in a job.

The jobs app is the machinery (the Job row and its outbox, the quota, the Report row
and its download, the email); this module is the content: what a report holds and
how it is written. A report is asked for through POST /api/reports or the reports
page (report_enqueue), built by posts.jobs.build_report on the `reports` queue
(report_build), and kept for jobs.queues.REPORT_RETENTION.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import cast

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse

from accounts.models import User
from core.commit import after_commit
from feeds.services import report_ready_notify
from jobs.models import Job, Report
from jobs.queues import REPORT_JOB, REPORT_RETENTION
from jobs.services import PermanentJobError, email_enqueue, job_complete, job_enqueue
from posts import counters
from posts.models import Post

REPORT_PROGRESS_STEPS = 10  # progress updates per report (each is one Redis write)


def report_enqueue(*, owner: User, now=None) -> Job:
    """Queue an activity report for `owner`: a Job row now, RQ after commit (jobs.services).

    QuotaExceeded when one is already being built or they asked for too many lately
    (jobs.queues.QUOTAS); nothing is recorded then.
    """
    return job_enqueue(kind=REPORT_JOB, owner=owner, payload={}, requested=True, now=now)


# A spreadsheet opening the CSV runs a cell starting with one of these as a formula
# (=HYPERLINK(...) leaks data or phishes); OWASP's CSV-injection advice is to prefix them
# with a quote, which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell of a report that a spreadsheet shows as text, never runs as a formula.

    A cell starting with one of _FORMULA_STARTS gets a leading quote (OWASP's advice).
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def report_build(*, job: Job, progress: Callable[[int, int], None] = lambda done, total: None) -> dict:
    """Write the owner's activity report (CSV: a header, one row per post) and email a link with the totals.

    Idempotent: the file name and the Report row are keyed by the job id, and the
    email goes out only with the run that completes the job. Views include the pending
    ones (state role: a Redis error fails the run, which RQ retries). A job without an
    owner fails at once (PermanentJobError).
    """
    if job.completed_at is not None:
        # job_complete sets completed_at and result in one UPDATE.
        return cast(dict, job.result)
    owner = job.owner
    if owner is None:
        raise PermanentJobError(f"Report job {job.pk} has no owner")
    posts = list(
        Post.objects.filter(author=owner).order_by("-created_at").values("id", "title", "created_at", "like_count")
    )
    flushed = dict(Post.objects.filter(author=owner).values_list("id", "view_count"))
    pending = counters.pending_views("post", list(flushed))
    total = len(posts)
    step = max(1, total // REPORT_PROGRESS_STEPS)

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["post_id", "title", "created_at", "views", "likes"])
    views_total = likes_total = 0
    for done, post in enumerate(posts, start=1):
        views = flushed[post["id"]] + pending.get(post["id"], 0)
        views_total += views
        likes_total += post["like_count"]
        writer.writerow(
            [post["id"], csv_cell(post["title"]), post["created_at"].isoformat(), views, post["like_count"]]
        )
        if done % step == 0 or done == total:
            progress(done, total)
    # The totals go in the email, the notification and the job's result, not in the file:
    # a row unlike the others would be read as a post by whatever sorts or sums it.
    summary = {"posts": total, "views": views_total, "likes": likes_total}

    name = f"reports/{job.pk}.csv"
    if default_storage.exists(name):
        default_storage.delete(name)  # a re-run replaces its own file, never adds a second
    stored = default_storage.save(name, ContentFile(out.getvalue().encode()))
    Report.objects.update_or_create(job=job, defaults={"owner": owner, "file": stored, "summary": summary})

    download = reverse("api-report-download", args=[job.pk])
    result = {"summary": summary, "download": download}
    with transaction.atomic():
        if job_complete(job_id=job.pk, result=result):
            link = settings.KESTREL_SITE_URL.rstrip("/") + download
            email_enqueue(
                to=owner.email,
                subject="Your Kestrel activity report is ready",
                body=(
                    f"{total} posts, {views_total} views, {likes_total} likes.\n\nDownload it: {link}\n"
                    f"(it is kept for {REPORT_RETENTION // 86400} days)\n"
                ),
                owner=owner,
                requested=False,  # the report was the request, and counted as one
            )
            after_commit(
                report_ready_notify,
                user_id=owner.pk,
                job_id=str(job.pk),
                download=download,
                summary=summary,
            )
    return result
