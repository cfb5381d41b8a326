"""A worker killed mid-job (SIGKILL: the OOM killer, a lost host) does not lose the job.

RQ runs jobs at least once. A forking worker runs each job in a work horse, a child in
a process group of its own, and the two die in different ways:

- The horse alone dies: its worker sees it at once (waitpid) and fails or retries the job.
- The worker and its horse die together: nobody is left to say so. The job stays
  STARTED in the queue's StartedJobRegistry, scored last heartbeat +
  min(job timeout left, job_monitoring_interval) + 60 s. The first maintenance run of
  any worker on that queue after that time (every maintenance_interval, checked between
  dequeue waits of worker_ttl - 15 s) retries it if it has retries left, or moves it to
  the FailedJobRegistry as AbandonedJobError.

The workers here are real `rq worker` subprocesses on a queue of their own, with every
interval at its floor and, in PromptAbandonWorker, RQ's fixed 60 s grace cut to 1 s;
the last test shows what a stock worker does with the same death.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from core.redis import get_redis, role_url
from devstack.processes import session_members
from tests.jobs import fault_jobs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "faults"  # no other test or worker uses it
JOB_TIMEOUT = 120  # longer than the job holds: RQ's own timeout must not end it first
MONITORING_INTERVAL = 1  # s between heartbeats of a busy worker (RQ's floor: SIGALRM seconds)
MAINTENANCE_INTERVAL = 1  # s between registry cleanups of an idle worker
WORKER_TTL = 16  # an idle worker blocks worker_ttl - 15 = 1 s per dequeue, then may clean
DEADLINE = 15.0  # s: every wait here gives up after this


class WorkerProcess:
    """One `rq worker` subprocess in a session of its own, so it and its horse die together."""

    def __init__(self, log_path: Path, *, worker_class: str, monitoring_interval: int) -> None:
        self.log_path = log_path
        self.args = [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            QUEUE,
            "--url",
            role_url("queue"),
            "--path",
            str(ROOT),
            "--worker-class",
            worker_class,
            "--worker-ttl",
            str(WORKER_TTL),
            "--maintenance-interval",
            str(MAINTENANCE_INTERVAL),
            "--job-monitoring-interval",
            str(monitoring_interval),
        ]
        self.process: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (the horse is in the same session)."""
        if self.process is None:
            return
        session = self.process.pid
        for _ in range(50):
            members = session_members(session)
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
        self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; every one is killed, with its horse, when the test ends."""
    started: list[WorkerProcess] = []

    def start(
        *, worker_class: type = fault_jobs.PromptAbandonWorker, monitoring_interval: int = MONITORING_INTERVAL
    ) -> WorkerProcess:
        worker = WorkerProcess(
            tmp_path / f"worker-{len(started) + 1}.log",
            worker_class=f"{worker_class.__module__}.{worker_class.__qualname__}",
            monitoring_interval=monitoring_interval,
        )
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:
            worker.kill()


@pytest.fixture
def queue() -> Queue:
    return Queue(QUEUE, connection=get_redis("queue"))


def wait_for(condition: Callable[[], bool], what: str, *workers: WorkerProcess) -> float:
    """Poll until `condition` holds; the seconds it took. Fails with the workers' logs at DEADLINE."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > DEADLINE:
            logs = "\n".join(f"--- {w.log_path.name}\n{w.log()}" for w in workers)
            pytest.fail(f"no {what} within {DEADLINE:.0f} s\n{logs}")
        time.sleep(0.02)
    return time.monotonic() - started


def starts(job: Job) -> int:
    return int(job.connection.get(fault_jobs.starts_key(job.id)) or 0)


def status(job: Job) -> JobStatus:
    return job.get_status(refresh=True)


# The latest a killed job can be noticed with the intervals above: its deadline is at most
# one heartbeat interval + the grace after the kill, then one dequeue wait and one
# maintenance interval pass at most; + 2 s for a loaded machine.
DETECTION_BOUND = (
    MONITORING_INTERVAL + fault_jobs.PromptAbandonWorker.grace + (WORKER_TTL - 15) + MAINTENANCE_INTERVAL + 2
)


def test_a_job_whose_worker_is_killed_is_retried_by_the_next_worker(queue, start_worker):
    job = queue.enqueue(fault_jobs.hold_until_killed, retry=Retry(max=1), job_timeout=JOB_TIMEOUT)
    first = start_worker()
    wait_for(lambda: starts(job) == 1, "first run", first)

    first.kill()
    second = start_worker()  # as a supervisor would restart it
    detected = wait_for(lambda: starts(job) == 2, "retry", first, second)
    wait_for(lambda: status(job) == JobStatus.FINISHED, "finished retry", second)

    print(f"killed worker's job retried after {detected:.2f} s")
    assert detected < DETECTION_BOUND
    assert job.return_value(refresh=True) == "finished on run 2"
    assert job.id not in FailedJobRegistry(queue=queue)


def test_a_job_whose_worker_is_killed_without_retries_left_is_failed_as_abandoned(queue, start_worker):
    job = queue.enqueue(fault_jobs.hold_until_killed, job_timeout=JOB_TIMEOUT)
    first = start_worker()
    wait_for(lambda: starts(job) == 1, "first run", first)

    first.kill()
    second = start_worker()
    detected = wait_for(lambda: job.id in FailedJobRegistry(queue=queue), "failed job", first, second)

    print(f"killed worker's job failed after {detected:.2f} s")
    assert detected < DETECTION_BOUND
    assert status(job) == JobStatus.FAILED
    assert "AbandonedJobError" in job.latest_result().exc_string
    assert starts(job) == 1  # failed, not run again
    assert job.id not in StartedJobRegistry(queue=queue)


def test_a_killed_work_horse_is_retried_by_its_own_worker_at_once(queue, start_worker):
    """The OOM killer's usual victim is the horse (it holds the job's memory), not the worker."""
    job = queue.enqueue(fault_jobs.hold_until_killed, retry=Retry(max=1), job_timeout=JOB_TIMEOUT)
    worker = start_worker(worker_class=Worker)  # stock RQ: no deadline is involved
    wait_for(lambda: starts(job) == 1, "first run", worker)

    os.kill(int(job.connection.get(fault_jobs.pid_key(job.id))), signal.SIGKILL)
    detected = wait_for(lambda: starts(job) == 2, "retry", worker)
    wait_for(lambda: status(job) == JobStatus.FINISHED, "finished retry", worker)

    print(f"killed horse's job retried after {detected:.2f} s")
    assert detected < 2
    assert job.return_value(refresh=True) == "finished on run 2"
    assert worker.process.poll() is None  # the worker lived on


def test_a_stock_worker_leaves_a_killed_job_started_for_the_monitoring_interval_plus_60_s(queue, start_worker):
    """What production sees: no option shortens RQ's 60 s grace, so detection takes longer."""
    monitoring_interval = 5  # distinct from the grace, so the deadline shows both parts
    ttl = monitoring_interval + fault_jobs.RQ_HEARTBEAT_GRACE
    job = queue.enqueue(fault_jobs.hold_until_killed, job_timeout=JOB_TIMEOUT)
    before = int(time.time())  # RQ scores in whole seconds
    worker = start_worker(worker_class=Worker, monitoring_interval=monitoring_interval)
    wait_for(lambda: starts(job) == 1, "first run", worker)
    worker.kill()
    after = time.time()

    started = StartedJobRegistry(queue=queue)
    [(_, deadline)] = job.connection.zrange(started.key, 0, -1, withscores=True)
    # Set when the job started or at a heartbeat since, both between `before` and `after`.
    assert before + ttl <= deadline <= after + ttl

    started.cleanup()  # what a maintenance run does now: too early, the job stays
    assert status(job) == JobStatus.STARTED
    assert job.id in started

    started.cleanup(timestamp=deadline)  # the first maintenance run after the deadline
    assert status(job) == JobStatus.FAILED
    assert job.id in FailedJobRegistry(queue=queue)
