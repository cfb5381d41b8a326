"""Jobs of the posts app, run by RQ workers: thin wrappers that call a service.

Each names its queue and retries in jobs.queues (POLICIES) or jobs/cron.py; the work
and its failure policy are the service's.
"""

from __future__ import annotations

from rq import get_current_job

from feeds.services import timeline_fanout_run
from jobs.models import Job
from posts import selectors
from posts.counters import flush_all_views
from posts.reports import report_build


def flush_view_counts() -> int:
    """Move pending view counts from Redis to the database; returns the views moved.

    Scheduled by jobs/cron.py; posts.counters.flush_all_views (a database error gives
    the batch back and fails the run, the next run retries).
    """
    return flush_all_views()


def build_report(job_id: str) -> dict:
    """An activity report (jobs.queues REPORT_JOB), with its progress in the RQ job's meta.

    posts.reports.report_build, for the Job row `job_id`; the reports page shows the
    progress live through GET /api/jobs/{id}.
    """
    rq_job = get_current_job()

    def progress(done: int, total: int) -> None:
        # Shown live on the reports page through GET /api/jobs/{id}.
        if rq_job is not None:
            rq_job.meta["progress"] = {"done": done, "total": total}
            rq_job.save_meta()

    return report_build(job=Job.objects.select_related("owner").get(pk=job_id), progress=progress)


def fanout_post(job_id: str) -> dict:
    """A popular author's new post, to every follower's timeline (jobs.queues FANOUT_JOB).

    feeds.services.timeline_fanout_run, given this app's post reader; a post deleted
    since is skipped there.
    """
    return timeline_fanout_run(job=Job.objects.get(pk=job_id), post_load=selectors.post_with_author)
