"""The reports page's status chips in a real browser: a report job queued, building, and
failed, as the page draws them and as its script (static/js/reports.js) updates them.

The happy path (Ready, the download, "1 post,") is the journey's step 7. Here the jobs
are held where the live worker cannot finish them first: each person's report job is
pushed, as Kestrel pushes it, to a queue of their own that no worker listens to
(the live worker listens only to jobs.queues.WORKER_QUEUES). The page reads a job's
status from its RQ record wherever it is queued, so what it shows is what it would
show for a job waiting on the `reports` queue; the tests then move the job on as a
worker would.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.checks import assert_accessible, watch_navigations
from tests.e2e.people import Person
from tests.live import LiveKestrel

pytestmark = pytest.mark.e2e

# A report job of E2E_USERNAME's: the row as posts.reports.report_enqueue records it
# (marked enqueued, as the outbox drain marks a row RQ holds), and its RQ job as
# jobs.services pushes it, but to the queue E2E_QUEUE, which no worker takes from. No
# retries: the first failure is its last attempt, as a report's third failure is.
HOLD_REPORT = """
import os
from django.utils import timezone
from rq import Callback, Queue
from accounts.models import User
from core.redis import get_redis
from jobs.models import Job
from jobs.queues import POLICIES, REPORT_JOB
from jobs.services import fail_fast_on_permanent_errors

owner = User.objects.get(username=os.environ["E2E_USERNAME"])
policy = POLICIES[REPORT_JOB]
job = Job.objects.create(kind=REPORT_JOB, owner=owner, payload={}, requested=True, enqueued_at=timezone.now())
Queue(os.environ["E2E_QUEUE"], connection=get_redis("state")).enqueue(
    policy.func,
    str(job.pk),
    job_id=str(job.pk),
    job_timeout=policy.timeout,
    result_ttl=policy.result_ttl,
    failure_ttl=policy.failure_ttl,
    on_failure=Callback(fail_fast_on_permanent_errors),
    meta={"owner_id": owner.pk, "kind": REPORT_JOB},
)
print(job.pk)
"""

# Job E2E_JOB as a worker leaves it partway through: STARTED (what the worker writes
# when it takes the job) with E2E_DONE of E2E_TOTAL posts written (what
# posts.jobs.build_report saves in the job's meta). Status and meta are all the page reads.
BUILDING = """
import os
from rq.job import Job, JobStatus
from core.redis import get_redis

rq_job = Job.fetch(os.environ["E2E_JOB"], connection=get_redis("state"))
rq_job.set_status(JobStatus.STARTED)
rq_job.meta["progress"] = {"done": int(os.environ["E2E_DONE"]), "total": int(os.environ["E2E_TOTAL"])}
rq_job.save_meta()
"""

# The report job on E2E_QUEUE run for real, by Kestrel's worker class in burst mode, on a
# disk that is full: RQ records the failure and its traceback, and Kestrel's failure
# callback marks the row failed (so it no longer counts as a report in flight).
FAIL_ON_FULL_DISK = """
import errno, os
from unittest import mock
from django.core.files.storage import FileSystemStorage
from rq import Queue
from core.redis import get_redis
from jobs.workers import KestrelWorker

queue = Queue(os.environ["E2E_QUEUE"], connection=get_redis("state"))
full = OSError(errno.ENOSPC, "No space left on device")
with mock.patch.object(FileSystemStorage, "_save", side_effect=full):
    KestrelWorker([queue], connection=queue.connection).work(burst=True)
"""
FULL_DISK_ERROR = "OSError: [Errno 28] No space left on device"


def held_queue(person: Person) -> str:
    return f"e2e-held-{person.username}"


def hold_report(site: LiveKestrel, person: Person) -> str:
    """A queued report job of `person`'s that no worker will take; its id."""
    output = site.shell(HOLD_REPORT, env={"E2E_USERNAME": person.username, "E2E_QUEUE": held_queue(person)})
    return output.strip().splitlines()[-1]


def build_partway(site: LiveKestrel, job_id: str, done: int, total: int) -> None:
    site.shell(BUILDING, env={"E2E_JOB": job_id, "E2E_DONE": str(done), "E2E_TOTAL": str(total)})


def fail_on_full_disk(site: LiveKestrel, person: Person) -> None:
    site.shell(FAIL_ON_FULL_DISK, env={"E2E_QUEUE": held_queue(person)})


def without_script(page: Page) -> None:
    """`page` loads no reports.js: what it shows is the server's own rendering."""
    page.route(re.compile(r"/static/js/reports(\.[0-9a-f]+)?\.js$"), lambda route: route.abort())


def test_a_report_shows_queued_then_its_progress_live(
    site: LiveKestrel, new_context: Callable[..., BrowserContext], shoot: Callable[[Page, str], None]
) -> None:
    harrier = Person("harrier")
    site.create_user(email=harrier.email, username=harrier.username, password=harrier.password)
    job_id = hold_report(site, harrier)
    context = new_context(person=harrier)
    page = context.new_page()
    page.goto("/reports")
    card = page.locator(f'article.job[data-job="{job_id}"]')
    status = card.locator(".status")
    bar = card.get_by_role("progressbar", name="Report progress")
    expect(status).to_have_text("Queued")
    expect(bar).to_have_js_property("value", 0)
    expect(card.get_by_role("link", name="Download CSV")).to_be_hidden()
    expect(card.get_by_role("button", name="Retry")).to_be_hidden()
    watched = watch_navigations(page)

    # A worker takes it and has written 2 of 5 posts: the page follows without a reload.
    build_partway(site, job_id, 2, 5)
    expect(status).to_have_text("Building 40 %")
    expect(status).to_have_class("status level warning")
    expect(bar).to_have_js_property("value", 40)
    assert_accessible(page)
    shoot(page, "reports-building")

    build_partway(site, job_id, 4, 5)
    expect(status).to_have_text("Building 80 %")
    expect(bar).to_have_js_property("value", 80)
    expect(card.get_by_role("link", name="Download CSV")).to_be_hidden()
    expect(card.get_by_role("button", name="Retry")).to_be_hidden()
    assert watched == [], f"the reports page navigated: {watched}"
    assert page.evaluate("() => window.kestrelSameDocument === true"), "the reports page was reloaded"

    # The server's page says the same without the script (jobs.views.job_chip).
    plain = context.new_page()
    without_script(plain)
    plain.goto("/reports")
    plain_card = plain.locator(f'article.job[data-job="{job_id}"]')
    expect(plain_card.locator(".status")).to_have_text("Building 80 %")
    expect(plain_card.get_by_role("progressbar", name="Report progress")).to_have_js_property("value", 80)


def test_a_failed_report_shows_its_error_and_retry_queues_a_new_one(
    site: LiveKestrel, new_context: Callable[..., BrowserContext], shoot: Callable[[Page, str], None]
) -> None:
    gyrfalcon = Person("gyrfalcon")
    site.create_user(email=gyrfalcon.email, username=gyrfalcon.username, password=gyrfalcon.password)
    job_id = hold_report(site, gyrfalcon)
    context = new_context(person=gyrfalcon)
    page = context.new_page()
    page.goto("/reports")
    card = page.locator(f'article.job[data-job="{job_id}"]')
    retry = card.get_by_role("button", name="Retry")
    expect(card.locator(".status")).to_have_text("Queued")
    expect(retry).to_be_hidden()
    watched = watch_navigations(page)

    # Its only attempt fails: the open page shows it without a reload.
    fail_on_full_disk(site, gyrfalcon)
    expect(card.locator(".status")).to_have_text("Failed")
    expect(card.locator(".status")).to_have_class("status level error")
    expect(card.locator(".detail")).to_have_text(FULL_DISK_ERROR)
    expect(retry).to_be_visible()
    expect(card.get_by_role("link", name="Download CSV")).to_be_hidden()
    assert watched == [], f"the reports page navigated: {watched}"

    # The server's page says the same without the script.
    plain = context.new_page()
    without_script(plain)
    plain.goto("/reports")
    plain_card = plain.locator(f'article.job[data-job="{job_id}"]')
    expect(plain_card.locator(".status")).to_have_text("Failed")
    expect(plain_card.locator(".detail")).to_have_text(FULL_DISK_ERROR)
    expect(plain_card.get_by_role("button", name="Retry")).to_be_visible()
    assert_accessible(plain)
    shoot(plain, "reports-failed")
    plain.close()

    # Retry asks for a new report (POST /reports/new): the failed one no longer counts
    # as in flight, so the quota lets it through, and the new job's card comes first.
    retry.click()
    expect(page.get_by_text("Your report is being built")).to_be_visible()
    cards = page.locator("article.job")
    expect(cards).to_have_count(2)
    expect(cards.first).not_to_have_attribute("data-job", job_id)
    expect(cards.first.locator(".status")).to_have_text(re.compile(r"^(Queued|Building \d+ %|Ready)$"))
    expect(cards.nth(1)).to_have_attribute("data-job", job_id)
    expect(cards.nth(1).locator(".status")).to_have_text("Failed")
