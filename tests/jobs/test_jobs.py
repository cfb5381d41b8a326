"""Jobs on RQ: enqueue after commit, a real worker, retries with backoff, permanent
errors, idempotency, the outbox, ownership. What a report holds is in tests/posts/test_reports.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import django_rq
import pytest
from django.core import mail
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient
from rq.job import Job as RQJob

from core.redis import get_redis
from jobs import selectors, services
from jobs.jobs import send_email
from jobs.models import Job
from jobs.queues import POLICIES
from posts.reports import report_enqueue
from tests.jobs import backends

pytestmark = pytest.mark.django_db


def queued_ids(name: str) -> list[str]:
    return django_rq.get_queue(name).get_job_ids()


def rq_job(job: Job) -> RQJob:
    return RQJob.fetch(str(job.pk), connection=get_redis("queue"))


# --- The API ---------------------------------------------------------------------------


def test_send_email_queues_a_job_after_commit(as_ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": "Hi"}, format="json")
        assert queued_ids("email") == []  # nothing before commit
    for callback in callbacks:
        callback()

    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Email queued"
    assert queued_ids("email") == [body["jobId"]]
    # The push writes nothing back: the outbox drain confirms it later, in a batch.
    assert Job.objects.get(pk=body["jobId"]).enqueued_at is None


def test_people_may_only_email_themselves(as_ada):
    response = as_ada.post("/api/send-email", {"email": "someone@else.com", "subject": "Spam"}, format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "You can only send email to your own address"}
    assert not Job.objects.filter(kind="email", payload__to="someone@else.com").exists()


def test_staff_may_email_anyone(make_user, django_capture_on_commit_callbacks):
    staff = APIClient()
    staff.force_login(make_user(is_staff=True))

    response = staff.post("/api/send-email", {"email": "someone@else.com", "subject": "Hello"}, format="json")

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"subject": "no address"}, "email"), ({"email": "not-an-address", "subject": "x"}, "email"), ({}, "subject")],
)
def test_bad_email_requests_are_400(as_ada, payload, field):
    before = Job.objects.count()

    response = as_ada.post("/api/send-email", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]
    assert Job.objects.count() == before


def test_anonymous_requests_are_401():
    assert APIClient().post("/api/send-email", {"email": "a@b.c", "subject": "x"}, format="json").status_code == 401
    assert APIClient().post("/api/reports").status_code == 401


# --- Enqueue after commit ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_enqueues_nothing(ada):
    def enqueue_then_fail():
        with transaction.atomic():
            services.email_enqueue(to="ada@example.com", subject="never", body="", owner=ada)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        enqueue_then_fail()

    assert not Job.objects.filter(payload__subject="never").exists()
    # Only ada's welcome email (her sign-up committed) is queued.
    assert [Job.objects.get(pk=i).payload["subject"] for i in queued_ids("email")] == ["Welcome to Kestrel"]


@pytest.mark.django_db(transaction=True)
def test_a_committed_transaction_enqueues(ada):
    with transaction.atomic():
        job = services.email_enqueue(to="ada@example.com", subject="committed", body="", owner=ada)

    assert str(job.pk) in queued_ids("email")


# --- A real worker ----------------------------------------------------------------------


def test_the_worker_sends_the_email_and_the_status_says_so(as_ada, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": "Hi"}, format="json").json()[
            "jobId"
        ]
    mail.outbox.clear()  # the welcome email of sign-up is not this test's

    run_jobs("email")

    assert [m.subject for m in mail.outbox] == ["Hi"]
    status = as_ada.get(f"/api/jobs/{job_id}").json()
    assert status["status"] == "finished"
    assert status["result"] == {"sent": True, "to": "ada@example.com"}


def test_a_job_that_runs_twice_sends_one_email(ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = services.email_enqueue(to="ada@example.com", subject="once", body="", owner=ada)
    mail.outbox.clear()

    send_email(str(job.pk))
    send_email(str(job.pk))  # RQ is at least once: a killed worker's job runs again

    assert [m.subject for m in mail.outbox] == ["once"]


def test_a_job_pushed_twice_still_acts_once(ada, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = services.email_enqueue(to="ada@example.com", subject="pushed twice", body="", owner=ada)
    services.job_push(job_id=job.pk)  # as the outbox drain would, had it missed the first push
    mail.outbox.clear()

    run_jobs("email")

    assert [m.subject for m in mail.outbox] == ["pushed twice"]


@override_settings(EMAIL_BACKEND="tests.jobs.backends.FlakyBackend")
def test_a_transient_failure_is_retried_with_backoff(ada, run_jobs, django_capture_on_commit_callbacks):
    backends.FAILURES["transient"] = 1
    with django_capture_on_commit_callbacks(execute=True):
        job = services.email_enqueue(to="ada@example.com", subject="retry me", body="", owner=ada)

    before = timezone.now()
    run_jobs("email")

    first = rq_job(job)
    assert first.get_status() == "scheduled"  # waiting out its backoff
    assert first.retries_left == POLICIES["email"].retries - 1
    # The first retry waits 1 to 2 s (full jitter); RQ schedules in whole seconds.
    scheduled_at = django_rq.get_queue("email").scheduled_job_registry.get_scheduled_time(first)
    assert before.replace(microsecond=0) <= scheduled_at <= before + timedelta(seconds=3)

    # Time passes: the scheduler moves it back to the queue, and the retry delivers.
    django_rq.get_queue("email").enqueue_job(first)
    run_jobs("email")

    assert rq_job(job).get_status() == "finished"
    assert [m.subject for m in mail.outbox if m.subject == "retry me"] == ["retry me"]


def test_retry_intervals_are_exponential_with_full_jitter():
    policy = POLICIES["email"]

    assert policy.retry_intervals(rand=lambda: 1.0) == [2, 4, 8]
    assert policy.retry_intervals(rand=lambda: 0.0) == [1, 1, 1]
    assert policy.retry_intervals(rand=lambda: 0.5) == [1, 2, 4]


@override_settings(EMAIL_BACKEND="tests.jobs.backends.RefusingBackend")
def test_a_permanent_failure_fails_at_once_without_retrying(ada, as_ada, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = services.email_enqueue(to="nobody@example.com", subject="refused", body="", owner=ada)

    run_jobs("email")

    failed = rq_job(job)
    assert failed.get_status() == "failed"
    assert str(job.pk) in django_rq.get_queue("email").failed_job_registry.get_job_ids()  # requeueable in the admin
    status = as_ada.get(f"/api/jobs/{job.pk}").json()
    assert status["status"] == "failed"
    assert "Address refused" in status["error"]


# --- Ownership ------------------------------------------------------------------------------


def test_someone_elses_job_and_report_are_404(ada, make_user, run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = report_enqueue(owner=ada)
    run_jobs("reports")
    other = APIClient()
    other.force_login(make_user())

    assert other.get(f"/api/jobs/{job.pk}").status_code == 404
    assert other.get(f"/api/reports/{job.pk}").status_code == 404
    assert other.get("/api/jobs/not-a-uuid").status_code == 404
    assert other.get("/api/jobs/00000000-0000-0000-0000-000000000000").json() == {"error": "Job not found"}


# --- Redis away at enqueue time ------------------------------------------------------------


def test_a_job_recorded_while_redis_is_down_is_pushed_by_the_outbox_later(
    ada, redis_server, run_jobs, django_capture_on_commit_callbacks
):
    redis_server.stop()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            job = services.email_enqueue(to="ada@example.com", subject="outbox", body="", owner=ada)
    finally:
        redis_server.start()
    job.refresh_from_db()
    assert job.enqueued_at is None  # committed, not lost, waiting in the outbox

    assert services.outbox_drain(now=timezone.now() + timedelta(minutes=1)) >= 1
    mail.outbox.clear()
    run_jobs("email")

    assert [m.subject for m in mail.outbox if m.subject == "outbox"] == ["outbox"]


def test_the_outbox_leaves_fresh_rows_to_their_own_push(ada, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job = services.email_enqueue(to="ada@example.com", subject="fresh", body="", owner=ada)

    assert services.outbox_drain() == 0
    job.refresh_from_db()
    assert job.enqueued_at is None


def test_a_job_reads_queued_from_rq_before_the_outbox_confirms_it_and_pending_if_rq_never_got_it(
    as_ada, ada, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        pushed = services.email_enqueue(to="ada@example.com", subject="pushed", body="", owner=ada)
    with django_capture_on_commit_callbacks(execute=False):
        unpushed = services.email_enqueue(to="ada@example.com", subject="not yet", body="", owner=ada)

    assert as_ada.get(f"/api/jobs/{pushed.pk}").json()["status"] == "queued"
    assert as_ada.get(f"/api/jobs/{unpushed.pk}").json()["status"] == "pending"
    # Once the outbox has seen RQ hold a job, RQ no longer holding it means its TTLs ran out.
    Job.objects.filter(pk=unpushed.pk).update(enqueued_at=timezone.now())
    assert as_ada.get(f"/api/jobs/{unpushed.pk}").json()["status"] == "expired"


def test_the_outbox_confirms_pushed_jobs_in_one_update_without_pushing_them_again(
    ada, django_assert_num_queries, django_capture_on_commit_callbacks
):
    Job.objects.all().delete()  # ada's welcome email, never pushed in a test transaction
    with django_capture_on_commit_callbacks(execute=True):
        jobs = [services.email_enqueue(to="ada@example.com", subject=f"n{n}", body="", owner=ada) for n in range(3)]
    later = timezone.now() + timedelta(minutes=1)

    with django_assert_num_queries(2):  # the rows, then one UPDATE
        assert services.outbox_drain(now=later) == 0

    assert queued_ids("email") == [str(job.pk) for job in jobs]  # each once
    assert set(Job.objects.values_list("enqueued_at", flat=True)) == {later}


def test_the_outbox_pushes_what_rq_lost_and_confirms_what_already_ran(ada, django_capture_on_commit_callbacks):
    Job.objects.all().delete()  # ada's welcome email, never pushed in a test transaction
    with django_capture_on_commit_callbacks(execute=False):  # the process died before its push
        lost = services.email_enqueue(to="ada@example.com", subject="lost", body="", owner=ada)
        ran = services.email_enqueue(to="ada@example.com", subject="ran", body="", owner=ada)
    services.job_complete(job_id=ran.pk, result={"sent": True})  # and RQ has let its record go

    assert services.outbox_drain(now=timezone.now() + timedelta(minutes=1)) == 1

    assert queued_ids("email") == [str(lost.pk)]
    assert Job.objects.filter(enqueued_at=None).count() == 0
    assert services.outbox_drain(now=timezone.now() + timedelta(minutes=2)) == 0  # nothing twice


def test_the_outbox_works_through_a_backlog_in_batches(ada, django_capture_on_commit_callbacks):
    Job.objects.all().delete()  # ada's welcome email, never pushed in a test transaction
    with django_capture_on_commit_callbacks(execute=False):
        jobs = [services.email_enqueue(to="ada@example.com", subject=f"n{n}", body="", owner=ada) for n in range(5)]

    assert services.outbox_drain(now=timezone.now() + timedelta(minutes=1), batch=2) == 5

    assert sorted(queued_ids("email")) == sorted(str(job.pk) for job in jobs)
    assert Job.objects.filter(enqueued_at=None).count() == 0


def test_with_redis_down_the_api_fails_clearly_and_records_nothing(as_ada, redis_down):
    before = Job.objects.count()

    response = as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": "x"}, format="json")

    assert response.status_code == 503
    assert "unavailable" in response.json()["error"]
    assert Job.objects.count() == before


def test_signing_up_queues_a_welcome_email(run_jobs, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        APIClient().post(
            "/api/register",
            {"email": "new@example.com", "username": "newbie", "password": "a-Strong-pass-42"},
            format="json",
        )
    run_jobs("email")

    assert [m.subject for m in mail.outbox] == ["Welcome to Kestrel"]


# --- Header injection ------------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: everyone@example.com", "Hi\nthere", "Hi\rthere", "Hi\u2028there"])
def test_a_subject_with_a_line_break_is_400_and_queues_nothing(as_ada, subject):
    before = Job.objects.count()

    response = as_ada.post("/api/send-email", {"email": "ada@example.com", "subject": subject}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Invalid input"
    assert body["details"]["subject"] == [services.SUBJECT_INVALID]
    assert Job.objects.count() == before


def test_the_service_refuses_a_header_breaking_subject_whatever_the_door(ada):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        services.email_enqueue(to="ada@example.com", subject="Hi\r\nBcc: x@example.com", body="", owner=ada)

    assert refused.value.message_dict == {"subject": [services.SUBJECT_INVALID]}
    assert not Job.objects.filter(payload__subject__startswith="Hi").exists()


def test_a_bad_header_at_send_time_fails_at_once_without_retrying(
    ada, as_ada, run_jobs, django_capture_on_commit_callbacks
):
    # A row that got past email_enqueue (queued before it checked, or written directly).
    with django_capture_on_commit_callbacks(execute=True):
        job = services.job_enqueue(
            kind="email", owner=ada, payload={"to": "ada@example.com", "subject": "a\r\nb", "body": ""}
        )
    mail.outbox.clear()

    run_jobs("email")

    failed = rq_job(job)
    assert failed.get_status() == "failed"  # not "scheduled" for a retry
    assert failed.retries_left == 0
    assert mail.outbox == []
    assert "Bad header" in as_ada.get(f"/api/jobs/{job.pk}").json()["error"]


# --- The job row in plain SQL ------------------------------------------------------------


def test_a_recorded_job_reads_back_through_the_orm_with_every_column(ada):
    # The enqueue writes the row in plain SQL: a column it left out would be silently NULL.
    assert {field.column for field in services._JOB_INSERT_FIELDS + services._JOB_EMPTY_FIELDS} == {
        field.column for field in Job._meta.concrete_fields
    }
    job = services.email_enqueue(to="ada@example.com", subject="plain", body="text é", owner=ada)

    stored = Job.objects.get(pk=job.pk)
    assert (stored.kind, stored.owner_id, stored.requested) == ("email", ada.pk, True)
    assert stored.payload == {"to": "ada@example.com", "subject": "plain", "body": "text é"}
    assert stored.created_at == job.created_at
    assert (stored.enqueued_at, stored.completed_at, stored.failed_at, stored.result) == (None, None, None, None)


def test_a_job_reads_its_payload_until_a_run_completes_it(ada):
    job = services.email_enqueue(to="ada@example.com", subject="s", body="b", owner=ada, requested=False)

    assert selectors.job_payload_to_run(job_id=str(job.pk)) == {"to": "ada@example.com", "subject": "s", "body": "b"}
    assert services.job_complete(job_id=str(job.pk), result={"sent": True}) is True
    assert selectors.job_payload_to_run(job_id=str(job.pk)) is None
    assert services.job_complete(job_id=str(job.pk), result={"sent": "again"}) is False
    assert Job.objects.get(pk=job.pk).result == {"sent": True}
    with pytest.raises(Job.DoesNotExist):
        selectors.job_payload_to_run(job_id="00000000-0000-0000-0000-000000000000")


@pytest.mark.django_db(transaction=True)
def test_of_runs_racing_to_complete_one_job_exactly_one_completes_it(ada):
    job = services.email_enqueue(to="ada@example.com", subject="race", body="", owner=ada, requested=False)
    barrier = threading.Barrier(8)
    completed: dict[int, bool] = {}

    def run(n: int) -> None:
        try:
            barrier.wait()
            completed[n] = services.job_complete(job_id=str(job.pk), result={"run": n})
        finally:
            connection.close()

    runs = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=60)

    # What follows a completion (the report's "ready" email) goes with the one run that won.
    assert sorted(completed.values()) == [False] * 7 + [True]
    assert completed[Job.objects.get(pk=job.pk).result["run"]] is True
