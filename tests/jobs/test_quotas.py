"""Per-person job quotas (jobs.queues.QUOTAS), enforced in the jobs service behind every door."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from jobs import services
from jobs.models import Job
from jobs.queues import QUOTA_WINDOW, QUOTAS
from posts.reports import report_enqueue

pytestmark = pytest.mark.django_db

REPORTS = QUOTAS["report"]
EMAILS = QUOTAS["email"]


def finish(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(completed_at=timezone.now())


def age(owner: User, kind: str, by: timedelta) -> None:
    """Move every job `owner` asked for back in time, as the clock moving on would."""
    for job in Job.objects.filter(owner=owner, kind=kind):
        Job.objects.filter(pk=job.pk).update(created_at=job.created_at - by)


# --- Reports: one in flight ----------------------------------------------------------------


def test_a_second_report_while_one_is_being_built_is_429_with_retry_after(as_ada, ada):
    first = as_ada.post("/api/reports")

    second = as_ada.post("/api/reports")

    assert first.status_code == 202
    assert second.status_code == 429
    assert "a report is already being built" in second.json()["error"].lower()
    assert int(second["Retry-After"]) == REPORTS.busy_retry_after
    assert Job.objects.filter(owner=ada, kind="report").count() == 1


def test_once_the_report_is_finished_or_failed_another_may_be_asked_for(ada):
    finish(report_enqueue(owner=ada))
    failed = report_enqueue(owner=ada)
    Job.objects.filter(pk=failed.pk).update(failed_at=timezone.now())

    report_enqueue(owner=ada)

    assert Job.objects.filter(owner=ada, kind="report").count() == 3


def test_the_reports_page_refuses_a_second_report_with_a_message_and_goes_back(client, ada):
    client.force_login(ada)
    client.post("/reports/new")

    response = client.post("/reports/new")

    assert response.status_code == 302
    assert response["Location"] == "/reports"
    message = list(get_messages(response.wsgi_request))[-1]
    assert message.level_tag == "error"
    assert "already being built" in message.message
    assert Job.objects.filter(owner=ada, kind="report").count() == 1


# --- Per hour ------------------------------------------------------------------------------


def test_reports_per_hour_are_capped_and_retry_after_says_when_a_slot_frees(as_ada, ada):
    for _ in range(REPORTS.per_window):
        finish(report_enqueue(owner=ada))

    refused = as_ada.post("/api/reports")

    assert refused.status_code == 429
    assert "reports in the last hour" in refused.json()["error"]
    assert QUOTA_WINDOW - 60 < int(refused["Retry-After"]) <= QUOTA_WINDOW + 1
    assert Job.objects.filter(owner=ada, kind="report").count() == REPORTS.per_window


def test_an_hour_later_the_quota_is_free_again(ada):
    for _ in range(REPORTS.per_window):
        finish(report_enqueue(owner=ada))
    with pytest.raises(services.QuotaExceeded):
        report_enqueue(owner=ada)

    finish(report_enqueue(owner=ada, now=timezone.now() + timedelta(seconds=QUOTA_WINDOW + 1)))
    age(ada, "report", timedelta(seconds=QUOTA_WINDOW + 1))
    report_enqueue(owner=ada)  # and with the rows really an hour old

    assert Job.objects.filter(owner=ada, kind="report").count() == REPORTS.per_window + 2


def test_emails_per_hour_are_capped_through_the_api(as_ada, ada):
    statuses = [
        as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": f"n{n}"}, format="json").status_code
        for n in range(EMAILS.per_window + 1)
    ]

    assert statuses == [202] * EMAILS.per_window + [429]
    assert Job.objects.filter(owner=ada, kind="email", requested=True).count() == EMAILS.per_window


def test_staff_mail_to_other_addresses_counts_too(make_user):
    staff = APIClient()
    staff.force_login(make_user(is_staff=True))

    statuses = [
        staff.post("/api/send-email", {"email": f"reader{n}@else.com", "subject": "News"}, format="json").status_code
        for n in range(EMAILS.per_window + 1)
    ]

    assert statuses[-1] == 429
    assert (
        "emails in the last hour"
        in staff.post("/api/send-email", {"email": "x@else.com", "subject": "News"}, format="json").json()["error"]
    )


def test_email_me_on_the_site_hits_the_same_quota_as_the_api(client, as_ada, ada):
    for n in range(EMAILS.per_window):
        as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": f"n{n}"}, format="json")
    client.force_login(ada)

    response = client.post("/reports/email-me")

    assert response["Location"] == "/reports"
    [message] = list(get_messages(response.wsgi_request))
    assert message.level_tag == "error"
    assert "emails in the last hour" in message.message
    assert not Job.objects.filter(owner=ada, payload__subject="Hello from Kestrel").exists()


def test_kestrels_own_mail_is_not_held_to_a_persons_quota(ada):
    for n in range(EMAILS.per_window):
        services.email_enqueue(to="ada@example.com", subject=f"n{n}", body="", owner=ada)

    services.email_enqueue(to="ada@example.com", subject="Your report is ready", body="", owner=ada, requested=False)

    with pytest.raises(services.QuotaExceeded):
        services.email_enqueue(to="ada@example.com", subject="one more", body="", owner=ada)


# --- The race -------------------------------------------------------------------------------


def race(threads: int, call) -> tuple[int, int]:
    """`threads` threads call `call()` together, each on its own database connection;
    (admitted, refused)."""
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []

    def run() -> None:
        try:
            barrier.wait()
            call()
            outcomes.append("admitted")
        except services.QuotaExceeded:
            outcomes.append("refused")
        finally:
            connection.close()

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return outcomes.count("admitted"), outcomes.count("refused")


@pytest.mark.django_db(transaction=True)
def test_concurrent_report_requests_of_one_person_admit_exactly_one(make_user):
    owner_id = make_user().pk

    admitted, refused = race(8, lambda: report_enqueue(owner=User.objects.get(pk=owner_id)))

    assert (admitted, refused) == (1, 7)
    assert Job.objects.filter(owner_id=owner_id, kind="report").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_email_requests_of_one_person_admit_exactly_the_quota(make_user):
    owner = make_user()

    def send() -> None:
        services.email_enqueue(to=owner.email, subject="race", body="", owner=User.objects.get(pk=owner.pk))

    admitted, refused = race(EMAILS.per_window + 6, send)

    assert (admitted, refused) == (EMAILS.per_window, 6)
    assert Job.objects.filter(owner=owner, payload__subject="race").count() == EMAILS.per_window


@override_settings(EMAIL_BACKEND="tests.jobs.backends.RefusingBackend")
def test_a_job_rq_gives_up_on_is_marked_failed_and_stops_counting_in_flight(
    ada, run_jobs, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = services.email_enqueue(to="nobody@example.com", subject="refused", body="", owner=ada)

    run_jobs("email")

    job.refresh_from_db()
    assert job.failed_at is not None
    assert job.completed_at is None
