"""Kestrel's worker (jobs.workers) for tests/jobs/test_worker_pool.py, with its timings at a second.

With production's values a dead worker's job is noticed after about two minutes and a
stuck job ended a minute after its timeout; here each of those takes about a second, so
the same paths run in seconds. Everything else is KestrelWorker's and RQ's own.
"""

from __future__ import annotations

from rq.job import Job

from jobs.workers import KestrelWorker
from tests.jobs.fault_jobs import RQ_HEARTBEAT_GRACE

MONITORING_INTERVAL = 1  # s between heartbeats of a running job
MAINTENANCE_INTERVAL = 1  # s between registry cleanups of an idle worker
WORKER_TTL = 16  # an idle worker waits WORKER_TTL - 15 = 1 s per dequeue, then may clean up
GRACE = 1  # s instead of RQ's 60 on a running job's deadline
HARD_TIMEOUT_GRACE = 1  # s past a job's timeout before its worker process is ended


class PromptKestrelWorker(KestrelWorker):
    hard_timeout_grace = HARD_TIMEOUT_GRACE

    def __init__(self, *args, **kwargs):
        kwargs["job_monitoring_interval"] = MONITORING_INTERVAL
        kwargs["maintenance_interval"] = MAINTENANCE_INTERVAL
        kwargs["worker_ttl"] = WORKER_TTL
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # At least a second: past the job's timeout RQ's own value falls below its 60 s grace.
        return max(1, super().get_heartbeat_ttl(job, working_time) - RQ_HEARTBEAT_GRACE + GRACE)
