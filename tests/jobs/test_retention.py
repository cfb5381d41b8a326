"""Retention: reports (file and rows) and old job rows are purged on schedule, bounded and idempotent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from jobs import services
from jobs.models import Job, Report
from jobs.queues import JOB_RETENTION, REPORT_RETENTION
from posts.jobs import build_report
from posts.reports import report_enqueue

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def built_report(make_user, django_capture_on_commit_callbacks):
    """Build a finished report for a new person; its Report row."""

    def build() -> Report:
        with django_capture_on_commit_callbacks(execute=True):
            job = report_enqueue(owner=make_user())
        build_report(str(job.pk))
        return Report.objects.get(pk=job.pk)

    return build


def test_a_report_past_its_retention_loses_its_file_and_rows_and_a_younger_one_stays(built_report):
    old, young = built_report(), built_report()
    Report.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(seconds=REPORT_RETENTION) - DAY)
    assert default_storage.exists(old.file.name)

    purged = services.jobs_purge()

    assert purged["reports"] == 1
    assert not default_storage.exists(old.file.name)
    assert not Report.objects.filter(pk=old.pk).exists()
    assert not Job.objects.filter(pk=old.pk).exists()
    assert default_storage.exists(young.file.name)
    assert Report.objects.filter(pk=young.pk).exists()


def test_the_purge_is_idempotent_and_a_file_already_gone_is_no_error(built_report):
    report = built_report()
    later = timezone.now() + timedelta(seconds=REPORT_RETENTION) + DAY
    default_storage.delete(report.file.name)  # as after a run cut short between file and rows

    assert services.jobs_purge(now=later)["reports"] == 1
    assert services.jobs_purge(now=later) == {"reports": 0, "jobs": 0}


def test_each_run_is_bounded_and_the_rest_goes_in_the_next(built_report):
    reports = [built_report() for _ in range(3)]
    later = timezone.now() + timedelta(seconds=REPORT_RETENTION) + DAY

    assert services.jobs_purge(now=later, batch=2)["reports"] == 2
    assert Report.objects.count() == 1
    assert services.jobs_purge(now=later, batch=2)["reports"] == 1
    assert not any(default_storage.exists(report.file.name) for report in reports)


def test_old_pushed_job_rows_go_and_unpushed_ones_stay(ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        sent = services.email_enqueue(to="ada@example.com", subject="sent", body="", owner=ada)
    services.outbox_drain(now=timezone.now() + timedelta(minutes=1))  # confirms it was pushed
    with django_capture_on_commit_callbacks(execute=False):  # never pushed: still in the outbox
        waiting = services.email_enqueue(to="ada@example.com", subject="waiting", body="", owner=ada)

    assert services.jobs_purge(now=timezone.now() + timedelta(seconds=JOB_RETENTION) - DAY)["jobs"] == 0
    services.jobs_purge(now=timezone.now() + timedelta(seconds=JOB_RETENTION) + DAY)

    assert not Job.objects.filter(pk=sent.pk).exists()
    assert Job.objects.filter(pk=waiting.pk).exists()


def test_the_purge_runs_as_a_periodic_job(built_report, run_jobs):
    import django_rq

    from jobs.jobs import purge_expired

    report = built_report()
    Report.objects.filter(pk=report.pk).update(created_at=timezone.now() - timedelta(seconds=REPORT_RETENTION) - DAY)
    job = django_rq.get_queue("periodic", commit_mode="auto").enqueue(purge_expired)

    run_jobs("periodic")

    job.refresh()
    assert job.return_value()["reports"] == 1
    assert not Report.objects.filter(pk=report.pk).exists()
