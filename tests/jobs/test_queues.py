"""Queue order: the periodic jobs of jobs/cron.py are never starved by people's jobs."""

from __future__ import annotations

import pytest
from django_rq.cron import DjangoCronScheduler
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job as RQJob
from rq.job import JobStatus

from core.redis import role_url
from jobs.queues import JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL, WORKER_QUEUES, WORKER_TTL
from jobs.workers import KestrelWorker
from posts.reports import report_enqueue

pytestmark = pytest.mark.django_db


def test_with_a_backlog_of_reports_queued_a_worker_takes_the_periodic_job_first(
    make_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        backlog = [report_enqueue(owner=make_user()) for _ in range(5)]
    # The cron scheduler enqueues after the backlog, as it does a minute into a busy day.
    scheduler = DjangoCronScheduler()
    scheduler.load_config_from_file("jobs/cron.py")
    connection = Redis.from_url(role_url("queue"))
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
    connection = Redis.from_url(role_url("queue"))
    try:
        worker = KestrelWorker(WORKER_QUEUES, connection=connection)
    finally:
        connection.close()

    assert worker.worker_ttl == WORKER_TTL
    assert worker.job_monitoring_interval == JOB_MONITORING_INTERVAL
    assert worker.maintenance_interval == MAINTENANCE_INTERVAL


class CountingWorker(KestrelWorker):
    """Kestrel's worker on a clock the test moves, counting its database connection checks."""

    now = 0.0
    checks = 0
    clock = staticmethod(lambda: CountingWorker.now)

    def _check_connections(self) -> None:
        CountingWorker.checks += 1
        super()._check_connections()


def test_jobs_in_quick_succession_share_a_connection_check_and_a_failed_job_is_followed_by_one():
    connection = Redis.from_url(role_url("queue"))
    try:
        queue = Queue("email", connection=connection)
        CountingWorker.now, CountingWorker.checks = 0.0, 0
        worker = CountingWorker([queue], connection=connection)

        def run(func: str, *args) -> None:
            queue.enqueue(func, *args)
            worker.work(burst=True, max_jobs=1)

        run("builtins.len", [])
        run("builtins.len", [])
        assert CountingWorker.checks == 1  # before the first job only: the second came at once

        run("builtins.int", "not a number")  # fails: its connection is checked after it
        assert CountingWorker.checks == 2

        CountingWorker.now += worker.connection_check_interval
        run("builtins.len", [])
        assert CountingWorker.checks == 3  # the interval passed: checked before the job
    finally:
        connection.close()
