"""Activity reports (posts.reports): the CSV a report job builds, its progress, its email,
idempotency, and cells a spreadsheet would run as formulas."""

from __future__ import annotations

import csv
import io

import pytest
from django.core import mail
from rq.job import Job as RQJob

from core.redis import get_redis
from jobs.models import Job, Report
from posts.counters import flush_views, record_post_view
from posts.jobs import build_report
from posts.models import Post
from posts.reports import report_enqueue

pytestmark = pytest.mark.django_db


# --- The report job -----------------------------------------------------------------------------


@pytest.fixture
def ada_with_posts(ada):
    posts = [Post.objects.create(author=ada, title=f"post {n}", content="...", like_count=n) for n in range(3)]
    for _ in range(4):
        record_post_view(post_id=posts[0].pk, viewer="u:9")
    flush_views()  # what the sending thread does within a fraction of a second
    return posts


def test_a_report_job_builds_the_csv_reports_progress_and_emails_a_link(
    as_ada, ada_with_posts, run_jobs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = as_ada.post("/api/reports").json()["jobId"]
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        run_jobs("reports")
    run_jobs("email")

    status = as_ada.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "finished"
    assert status["result"]["summary"] == {"posts": 3, "views": 4, "likes": 3}
    assert RQJob.fetch(job_id, connection=get_redis("queue")).meta["progress"] == {"done": 3, "total": 3}
    download = as_ada.get(f"/api/reports/{job_id}")
    assert download.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert rows[0] == ["post_id", "title", "created_at", "views", "likes"]
    assert {row[1] for row in rows[1:4]} == {"post 0", "post 1", "post 2"}
    [email] = mail.outbox
    assert f"/api/reports/{job_id}" in email.body


def test_a_report_job_that_runs_twice_writes_one_report_and_one_email(
    ada, ada_with_posts, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = report_enqueue(owner=ada)

    with django_capture_on_commit_callbacks(execute=True):
        build_report(str(job.pk))
        build_report(str(job.pk))

    assert Report.objects.filter(owner=ada).count() == 1
    assert Job.objects.filter(kind="email", payload__subject="Your Kestrel activity report is ready").count() == 1


# --- The report file -----------------------------------------------------------------------


def report_rows(job: Job) -> list[list[str]]:
    with Report.objects.get(pk=job.pk).file.open("rb") as file:
        return list(csv.reader(io.StringIO(file.read().decode())))


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_title_a_spreadsheet_would_run_as_a_formula_comes_out_as_text(ada, start, django_capture_on_commit_callbacks):
    title = start + 'HYPERLINK("http://x","y")'
    Post.objects.create(author=ada, title=title, content="...")
    with django_capture_on_commit_callbacks(execute=True):
        job = report_enqueue(owner=ada)

    build_report(str(job.pk))

    assert report_rows(job)[1][1] == "'" + title


def test_the_report_csv_is_a_header_and_one_row_per_post_with_the_totals_elsewhere(
    ada, ada_with_posts, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = report_enqueue(owner=ada)

    with django_capture_on_commit_callbacks(execute=True):
        result = build_report(str(job.pk))

    rows = report_rows(job)
    assert rows[0] == ["post_id", "title", "created_at", "views", "likes"]
    assert sorted(int(row[0]) for row in rows[1:]) == sorted(post.pk for post in ada_with_posts)
    assert result["summary"] == {"posts": 3, "views": 4, "likes": 3}
    [email] = Job.objects.filter(kind="email", payload__subject="Your Kestrel activity report is ready")
    assert email.payload["body"].startswith("3 posts, 4 views, 3 likes.")
