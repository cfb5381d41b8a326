"""Queue order: the periodic jobs of jobs/cron.py are never starved by people's jobs."""

from __future__ import annotations

import pytest
from django_rq.cron import DjangoCronScheduler
from redis import Redis
from rq import SimpleWorker
from rq.job import Job as RQJob
from rq.job import JobStatus

from core.redis import role_url
from jobs import services
from jobs.queues import JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL, WORKER_QUEUES, WORKER_TTL
from jobs.workers import KestrelWorker

pytestmark = pytest.mark.django_db


def test_with_a_backlog_of_reports_queued_a_worker_takes_the_periodic_job_first(
    make_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        backlog = [services.report_enqueue(owner=make_user()) for _ in range(5)]
    # The cron scheduler enqueues after the backlog, as it does a minute into a busy day.
    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("jobs/cron.py")
    connection = Redis.from_url(role_url("state"))
    try:
        drain = next(job for job in scheduler.get_jobs() if job.func_name == "jobs.jobs.drain_outbox")
        periodic = drain.enqueue(connection)

        # One job, taken the way `manage.py rqworker` takes them: from the queues in order.
        worker = SimpleWorker(WORKER_QUEUES, connection=connection)
        worker.work(burst=True, max_jobs=1)

        assert periodic.get_status(refresh=True) == JobStatus.FINISHED
        assert [RQJob.fetch(str(job.pk), connection=connection).get_status() for job in backlog] == [
            JobStatus.QUEUED
        ] * len(backlog)
    finally:
        connection.close()


def test_kestrels_worker_has_kestrels_intervals_whichever_command_starts_it():
    """`rqworker-pool` has no --worker-ttl flag and django-rq's commands none for the intervals."""
    # A connection of its own: RQ raises the socket timeout of the pool a worker is given.
    connection = Redis.from_url(role_url("state"))
    try:
        worker = KestrelWorker(WORKER_QUEUES, connection=connection)
    finally:
        connection.close()

    assert worker.worker_ttl == WORKER_TTL
    assert worker.job_monitoring_interval == JOB_MONITORING_INTERVAL
    assert worker.maintenance_interval == MAINTENANCE_INTERVAL
