"""The reports page reads as people expect: status chips, relative times, plurals, Retry."""

from __future__ import annotations

import pytest

from jobs.views import job_chip

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("job", "chip"),
    [
        ({"status": "pending"}, ("Queued", "skipped")),  # in the outbox, not yet on the queue
        ({"status": "queued"}, ("Queued", "skipped")),
        ({"status": "started", "progress": {"done": 2, "total": 5}}, ("Building 40 %", "warning")),
        ({"status": "started", "progress": None}, ("Building", "warning")),
        ({"status": "finished"}, ("Ready", "ok")),
        ({"status": "failed"}, ("Failed", "error")),
        ({"status": "canceled"}, ("Expired", "skipped")),
    ],
)
def test_a_report_job_s_status_reads_as_a_chip(job, chip):
    assert job_chip(job) == chip


def test_a_finished_report_says_ready_in_the_singular_where_it_is_one(
    ada, as_ada, run_jobs, django_capture_on_commit_callbacks
):
    from posts.reports import report_enqueue
    from posts.services import post_create

    with django_capture_on_commit_callbacks(execute=True):
        post_create(author=ada, title="Only one", content="a single post")
        report_enqueue(owner=ada)
    with django_capture_on_commit_callbacks(execute=True):
        run_jobs("reports")

    page = as_ada.get("/reports").content.decode()

    assert "Ready" in page
    assert "1 post," in page
    assert "0 likes" in page
    assert "just now" in page
