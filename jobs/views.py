"""The reports page: watch reports build live, download them, ask for a test email.

Its "Build my activity report" button posts to posts.views.report_request.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime

from core.types import AuthenticatedHttpRequest
from core.views import post_only
from jobs import selectors, services


@login_required
def reports(request: AuthenticatedHttpRequest) -> HttpResponse:
    """/reports: the person's recent report jobs with their status."""
    jobs = [selectors.job_status(job=job) for job in selectors.reports_of(user=request.user)]
    for job in jobs:
        job["created"] = parse_datetime(job["createdAt"])
        job["chip"], job["chip_level"] = job_chip(job)
    return render(request, "jobs/reports.html", {"jobs": jobs})


# A job's status as people read it, and the chip's colour (the .level classes).
_CHIPS = {
    "pending": ("Queued", "skipped"),  # in the outbox, not yet on the queue
    "queued": ("Queued", "skipped"),
    "deferred": ("Queued", "skipped"),
    "scheduled": ("Queued", "skipped"),
    "started": ("Building", "warning"),
    "finished": ("Ready", "ok"),
    "failed": ("Failed", "error"),
}


def job_chip(job: dict[str, Any]) -> tuple[str, str]:
    """("Building 40 %", "warning"): the chip of a report job; the same words as static/js/reports.js."""
    label, level = _CHIPS.get(job["status"], ("Expired", "skipped"))
    progress = job.get("progress") or {}
    if job["status"] == "started" and progress.get("total"):
        label = f"{label} {round(100 * progress['done'] / progress['total'])} %"
    return label, level


@post_only("reports")
@login_required
def email_me(request: AuthenticatedHttpRequest) -> HttpResponse:
    """POST /reports/email-me: queue a test email to oneself (held to the email quota)."""
    try:
        services.email_enqueue(
            to=request.user.email,
            subject="Hello from Kestrel",
            body="You asked Kestrel to email you, and it did (through a background job).",
            owner=request.user,
        )
    except services.QuotaExceeded as exc:
        messages.error(request, str(exc))
        return redirect("reports")
    messages.success(request, f"An email to {request.user.email} is on its way.")
    return redirect("reports")
