"""Test-only job functions and worker class for tests/jobs/test_worker_faults.py and
test_worker_pool.py.

They run in real worker subprocesses, some of which never load Django: a job keeps its
state in Redis, through the connection of the worker that runs it, so it needs neither
the database nor settings.
"""

from __future__ import annotations

import ctypes
import os
import time

from rq import Worker, get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

# Seconds RQ 3 adds to every deadline of a running job (BaseWorker.get_heartbeat_ttl).
# Hard-coded there; test_worker_faults pins it so an RQ upgrade that changes it shows.
RQ_HEARTBEAT_GRACE = 60

HOLD_SECONDS = 60  # the first run holds this long at most, so a test that fails still ends


def starts_key(job_id: str) -> str:
    """STRING (counter), state role, no TTL (tests flush Redis): runs of the job that started."""
    return f"test:faults:{job_id}:starts"


def pid_key(job_id: str) -> str:
    """STRING (pid), state role, no TTL (tests flush Redis): the process of the latest run (horse or worker)."""
    return f"test:faults:{job_id}:pid"


def hold_until_killed() -> str:
    """Count a start; the first run then holds until it is killed, a later run returns at once."""
    starts = _count_start()
    if starts > 1:
        return f"finished on run {starts}"
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "never killed"


def _count_start() -> int:
    """Count a start of the current job (and note its process); which start this is."""
    job = get_current_job()
    # One MULTI: a test that sees the count also sees the pid.
    with job.connection.pipeline() as pipe:
        pipe.set(pid_key(job.id), os.getpid())
        pipe.incr(starts_key(job.id))
        return pipe.execute()[1]


def hold(seconds: float) -> str:
    """Count a start, then work (sleep) for `seconds`."""
    _count_start()
    time.sleep(seconds)
    return "held"


def crash_on_first_run(how: str) -> str:
    """Count a start; the first run ends its process (`exit`: os._exit, `segfault`: SIGSEGV)."""
    starts = _count_start()
    if starts > 1:
        return f"finished on run {starts}"
    if how == "segfault":
        ctypes.string_at(0)  # reads address 0: the kernel's SIGSEGV, no Python exception
    os._exit(1)


def ignore_timeout() -> str:
    """Count a start, then outlive RQ's timeout by swallowing its exception, as a stuck call would."""
    _count_start()
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except JobTimeoutException:
            pass
    return "never ended"


class PromptAbandonWorker(Worker):
    """RQ's forking Worker, with the grace on a running job's deadline cut from 60 s to 1 s.

    A running job's entry in the StartedJobRegistry is scored last heartbeat +
    min(job timeout left, job_monitoring_interval) + 60 s, and only a maintenance run
    after that score fails or retries it. The 60 s is no option of RQ's; cutting it
    here lets the tests watch that path in seconds, everything else is RQ's own.
    """

    grace = 1  # seconds; the test worker beats every second, nothing else cleans its queue

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return super().get_heartbeat_ttl(job, working_time) - RQ_HEARTBEAT_GRACE + self.grace
