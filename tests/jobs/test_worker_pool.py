"""Production's worker setup: a pool of KestrelWorkers (`manage.py rqworker-pool`, jobs.workers).

A KestrelWorker runs its jobs in its own process, so a job that crashes (os._exit, a
segfault) or hangs past its timeout ends that process, never the other workers or the
jobs they run. The pool starts a new worker within a second; RQ retries (or fails) the
ended job once its heartbeats have stopped, as it does for a killed forking worker.

The pool is a real subprocess whose workers are tests.jobs.kestrel_workers.PromptKestrelWorker:
Kestrel's worker with its timings at a second.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus

from core.redis import get_redis
from devstack.processes import Process
from tests.jobs import fault_jobs, kestrel_workers

pytestmark = pytest.mark.slow

QUEUE = "default"
JOB_TIMEOUT = 120  # longer than any job here holds, unless a test says otherwise
DEADLINE = 20.0  # s: every wait here gives up after this
# The latest a job whose worker died is picked up again: its deadline (one heartbeat
# interval and the grace), then an idle worker's dequeue wait and maintenance interval.
DETECTION_BOUND = (
    kestrel_workers.MONITORING_INTERVAL
    + kestrel_workers.GRACE
    + (kestrel_workers.WORKER_TTL - 15)
    + kestrel_workers.MAINTENANCE_INTERVAL
    + 3  # the pool's own check (every second), a worker's start-up, a loaded machine
)


@pytest.fixture
def queue() -> Queue:
    return Queue(QUEUE, connection=get_redis("queue"))


@pytest.fixture
def start_pool(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `manage.py rqworker-pool` as production does; killed, workers and all, at the end."""
    started: list[Process] = []
    worker_class = f"{kestrel_workers.__name__}.{kestrel_workers.PromptKestrelWorker.__name__}"

    def start(workers: int = 2) -> Process:
        command = [sys.executable, "manage.py", "rqworker-pool", QUEUE, "--num-workers", str(workers)]
        pool = Process(
            "worker pool",
            [*command, "--worker-class", worker_class],
            env=os.environ.copy(),
            log_path=tmp_path / f"pool-{len(started) + 1}.log",
        )
        started.append(pool)
        pool.start()
        wait_for(lambda: len(live_workers()) == workers, "workers registered", pool)
        return pool

    try:
        yield start
    finally:
        for pool in started:
            pool.kill()


def wait_for(condition: Callable[[], bool], what: str, pool: Process) -> float:
    """Poll until `condition` holds; the seconds it took. Fails with the pool's log at DEADLINE."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE:
            pytest.fail(f"no {what} within {DEADLINE:.0f} s\n{pool.log_tail()}")
        time.sleep(0.02)
    return time.monotonic() - started


def live_workers() -> list[Worker]:
    """The workers registered on the queue whose process is alive."""
    return [worker for worker in Worker.all(connection=get_redis("queue")) if _alive(worker.pid)]


def _alive(pid: int | None) -> bool:
    try:
        os.kill(pid or 0, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return bool(pid)


def starts(job: Job) -> int:
    return int(job.connection.get(fault_jobs.starts_key(job.id)) or 0)


def ran_in(job: Job) -> int:
    return int(job.connection.get(fault_jobs.pid_key(job.id)))


def status(job: Job) -> JobStatus:
    return job.get_status(refresh=True)


@pytest.mark.parametrize("how", ["exit", "segfault"])
def test_a_job_that_crashes_its_worker_takes_no_other_job_down_and_runs_again(how, queue, start_pool):
    pool = start_pool(workers=2)
    neighbour = queue.enqueue(fault_jobs.hold, 3.0, job_timeout=JOB_TIMEOUT)
    wait_for(lambda: starts(neighbour) == 1, "neighbour started", pool)
    crash = queue.enqueue(fault_jobs.crash_on_first_run, how, retry=Retry(max=1), job_timeout=JOB_TIMEOUT)
    wait_for(lambda: starts(crash) == 1, "crash", pool)
    crashed_pid = ran_in(crash)

    retried = wait_for(lambda: status(crash) == JobStatus.FINISHED, "crashed job retried", pool)
    wait_for(lambda: status(neighbour) == JobStatus.FINISHED, "neighbour finished", pool)

    print(f"{how}: the crashed job ran again after {retried:.2f} s")
    assert retried < DETECTION_BOUND
    assert neighbour.return_value(refresh=True) == "held"
    assert starts(neighbour) == 1  # never interrupted, never run again
    assert crash.return_value(refresh=True) == "finished on run 2"
    # The pool replaced the dead worker: two workers again, the crashed one not among them.
    wait_for(lambda: len(live_workers()) == 2, "replacement worker", pool)
    assert crashed_pid not in {worker.pid for worker in live_workers()}
    assert pool.is_running()


def test_a_job_stuck_past_its_timeout_is_ended_with_its_worker_and_nothing_else(queue, start_pool):
    pool = start_pool(workers=2)
    neighbour = queue.enqueue(fault_jobs.hold, 4.0, job_timeout=JOB_TIMEOUT)
    wait_for(lambda: starts(neighbour) == 1, "neighbour started", pool)
    stuck = queue.enqueue(fault_jobs.ignore_timeout, job_timeout=1)  # swallows RQ's SIGALRM timeout
    wait_for(lambda: starts(stuck) == 1, "stuck job started", pool)
    stuck_pid = ran_in(stuck)

    ended = wait_for(lambda: not _alive(stuck_pid), "stuck worker ended", pool)
    wait_for(lambda: status(stuck) == JobStatus.FAILED, "stuck job failed", pool)
    wait_for(lambda: status(neighbour) == JobStatus.FINISHED, "neighbour finished", pool)

    print(f"the stuck job's worker ended {ended:.2f} s after the job started")
    assert ended < 1 + kestrel_workers.HARD_TIMEOUT_GRACE + 2  # its timeout, the grace, a loaded machine
    assert "Timeout (0:00:02)!" in pool.log_tail(200)  # faulthandler's watchdog, not RQ's SIGALRM
    assert "AbandonedJobError" in stuck.latest_result().exc_string
    assert starts(stuck) == 1
    assert neighbour.return_value(refresh=True) == "held"
    wait_for(lambda: len(live_workers()) == 2, "replacement worker", pool)
    after = queue.enqueue(fault_jobs.hold, 0.0, job_timeout=JOB_TIMEOUT)
    wait_for(lambda: status(after) == JobStatus.FINISHED, "a later job", pool)


def test_a_long_job_keeps_its_heartbeats_and_is_never_taken_for_abandoned(queue, start_pool):
    """Without a heartbeat during the job, its deadline would pass after GRACE + 1 s and
    the idle worker's cleanup would run it again (it has a retry)."""
    pool = start_pool(workers=2)
    job = queue.enqueue(fault_jobs.hold, 5.0, retry=Retry(max=1), job_timeout=JOB_TIMEOUT)

    wait_for(lambda: status(job) == JobStatus.FINISHED, "long job finished", pool)

    assert starts(job) == 1
    assert job.return_value(refresh=True) == "held"
