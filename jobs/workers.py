"""The RQ worker of `manage.py rqworker-pool` and `rqworker` (settings.RQ["WORKER_CLASS"]).

Jobs run in the worker process (RQ's SimpleWorker), keeping one database connection.
A job that crashes the process takes only this process, which its supervisor starts
again, and RQ retries the job once its heartbeats stop; a job past its timeout that
SIGALRM cannot stop is ended by a watchdog that needs no GIL.
"""

from __future__ import annotations

import faulthandler
import logging
import threading
import time
from typing import Any

from django.db import close_old_connections
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.worker import BaseWorker, SimpleWorker, WorkerStatus

from core import batching
from core.redis import UNAVAILABLE_ERRORS
from jobs.queues import HARD_TIMEOUT_GRACE, JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL, WORKER_TTL

logger = logging.getLogger(__name__)


class KestrelWorker(SimpleWorker):
    """RQ's SimpleWorker with heartbeats from a thread, a hard-timeout watchdog, Django's
    connection checks between jobs, and core.batching's buffers flushed after each job."""

    hard_timeout_grace = HARD_TIMEOUT_GRACE
    # Seconds between Django's connection checks while jobs follow each other (and always
    # after a failed job): run before every job, the health check's SELECT 1 was one more
    # database round trip per job, a fifth of a no-op job's time on PostgreSQL.
    connection_check_interval = 1.0
    clock = staticmethod(time.monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # django-rq's commands have no flags for the intervals (and rqworker-pool none for
        # the TTL); RQ's defaults leave a dead worker's job unnoticed for up to ~15 minutes.
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)

        self._heartbeats: Heartbeats | None = None
        self._connections_checked = float("-inf")  # self.clock() at the last close_old_connections()

    def execute_job(self, job: Job, queue: Queue) -> None:
        # As Django does around a request: a connection past CONN_MAX_AGE or broken (the
        # database restarted) is replaced, not handed to every later job of this process.
        if self.clock() - self._connections_checked >= self.connection_check_interval:
            self._check_connections()
        execution = self.prepare_execution(job)
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        if timeout > 0:
            # SIGALRM (RQ's timeout) runs Python code, so a job stuck in C or catching the
            # timeout outlives it; faulthandler's watchdog thread needs no GIL and _exits
            # the process, with every thread's traceback in the log.
            faulthandler.dump_traceback_later(timeout + self.hard_timeout_grace, exit=True)
        if self._heartbeats is None:
            self._heartbeats = Heartbeats(self)
            self._heartbeats.start()
        self._heartbeats.follow((job, execution))
        succeeded = False
        try:
            succeeded = self.perform_job(job, queue, execution)
        finally:
            self._heartbeats.follow(None)
            faulthandler.cancel_dump_traceback_later()
            if not succeeded:
                # A failed job may have broken its connection: the next job gets a checked one.
                self._check_connections()
            # What the job counted in memory (core.batching: views) is sent now, not on
            # the next timed send: a job's effects are visible once it is done.
            batching.flush_all()
        self.set_state(WorkerStatus.IDLE)

    def _check_connections(self) -> None:
        close_old_connections()
        self._connections_checked = self.clock()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker sends no heartbeat during a job, so it gives the whole timeout + 60 s;
        # Heartbeats sends them every job_monitoring_interval, as a forking worker does.
        return BaseWorker.get_heartbeat_ttl(self, job, working_time)


class Heartbeats(threading.Thread):
    """A worker's running job's heartbeats, from a thread, every job_monitoring_interval.

    One thread for the worker's life (a thread per job would cost every job its start).
    The beats stop when the process dies or stops running Python (stuck holding the
    GIL): the job's deadline then passes and RQ's registry cleanup retries or fails it.
    """

    def __init__(self, worker: BaseWorker) -> None:
        super().__init__(name="rq-heartbeats", daemon=True)
        self.worker = worker
        self._lock = threading.Lock()  # no beat for a job once follow(None) has returned
        self._running: tuple[Job, Execution] | None = None

    def follow(self, running: tuple[Job, Execution] | None) -> None:
        """Beat for this job and its execution from now on (None: no job runs)."""
        with self._lock:
            self._running = running

    def run(self) -> None:
        while True:
            time.sleep(self.worker.job_monitoring_interval)
            with self._lock:
                if self._running is None:
                    continue
                try:
                    self.worker.maintain_heartbeats(*self._running)
                except UNAVAILABLE_ERRORS as exc:
                    # Redis away for a moment: the next beat tries again, well within the deadline.
                    logger.warning("Heartbeat of job %s failed (%s)", self._running[0].id, exc)
                except Exception:
                    # Anything else is logged, not raised: a dead thread would leave every
                    # later job of this worker without heartbeats, to be run twice.
                    logger.exception("Heartbeat of job %s failed", self._running[0].id)
