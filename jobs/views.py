"""The reports page: watch reports build live, download them, ask for a test email.

Its "Build my activity report" button posts to posts.views.report_request.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render

from core.types import AuthenticatedHttpRequest
from core.views import post_only
from jobs import selectors, services


@login_required
def reports(request: AuthenticatedHttpRequest) -> HttpResponse:
    """/reports: the person's recent report jobs with their status."""
    jobs = selectors.reports_of(user=request.user)
    return render(request, "jobs/reports.html", {"jobs": [selectors.job_status(job=job) for job in jobs]})


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
