"""The RQ worker of the job fault scenario: Kestrel's, with its liveness intervals shortened.

With production's values (jobs/queues.py) a worker killed with its job is noticed
after about two minutes: the job's deadline is its last heartbeat plus
JOB_MONITORING_INTERVAL (10 s) plus RQ's fixed 60 s grace, and the next registry
cleanup comes at most MAINTENANCE_INTERVAL (60 s) later, checked between dequeue waits
of WORKER_TTL - 15 (60 s). Here every one of those is a second, so the same path runs
in seconds; everything else is KestrelWorker's and RQ's own.
"""

from __future__ import annotations

from rq.job import Job

from jobs.workers import KestrelWorker
from tests.jobs.fault_jobs import RQ_HEARTBEAT_GRACE

# Seconds; pass `--worker-ttl` WORKER_TTL on the command line too (django-rq's flag).
JOB_MONITORING_INTERVAL = 1
MAINTENANCE_INTERVAL = 1
WORKER_TTL = 16  # an idle worker waits WORKER_TTL - 15 = 1 s per dequeue, then may clean up
GRACE = 1  # instead of RQ's 60 s on a running job's deadline

WORKER_ARGS = ("--worker-class", f"{__name__}.PromptWorker", "--worker-ttl", str(WORKER_TTL))


class PromptWorker(KestrelWorker):
    def __init__(self, *args, **kwargs):
        kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL
        kwargs["maintenance_interval"] = MAINTENANCE_INTERVAL
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return super().get_heartbeat_ttl(job, working_time) - RQ_HEARTBEAT_GRACE + GRACE
