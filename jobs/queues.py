"""Queue names and the policy of each kind of job. settings.RQ_QUEUES is built from this.

Kept free of Django imports: settings.py reads it while settings are being built.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

PERIODIC = "periodic"  # the jobs of jobs/cron.py, and nothing else
DEFAULT = "default"
EMAIL = "email"
REPORTS = "reports"

# Seconds a job may run before the worker kills it (RQ's job timeout).
QUEUE_TIMEOUTS: dict[str, int] = {
    PERIODIC: 300,
    DEFAULT: 300,
    EMAIL: 60,
    REPORTS: 600,
}

# The order a worker listens in (it takes from the first non-empty queue). Periodic
# jobs first: they are few and short, and the view-count flush, the invalidation replay
# and the outbox drain must not wait behind a backlog of people's reports. Then email,
# as people wait on it.
WORKER_QUEUES: list[str] = [PERIODIC, EMAIL, REPORTS, DEFAULT]


@dataclass(frozen=True)
class JobPolicy:
    """How one kind of job runs: its queue and function, its retries and backoff, and how
    long RQ keeps its result and its failure."""

    queue: str
    func: str  # dotted path of the job function (jobs/jobs.py, or the jobs.py of the app it works for)
    retries: int  # attempts after the first
    backoff_base: float  # seconds: retry n waits up to base * 2**n (full jitter)
    result_ttl: int = 24 * 60 * 60  # how long a finished job stays readable in Redis
    failure_ttl: int = 7 * 24 * 60 * 60  # failed jobs stay for the admin to inspect and requeue

    @property
    def timeout(self) -> int:
        return QUEUE_TIMEOUTS[self.queue]

    @property
    def longest_life(self) -> int:
        """Seconds from a job's first start to its last attempt's end, at worst (every
        attempt hitting its timeout, every backoff its longest)."""
        return self.timeout * (self.retries + 1) + round(
            sum(self.backoff_base * 2 ** (n + 1) for n in range(self.retries))
        )

    def retry_intervals(self, rand: Callable[[], float] = random.random) -> list[int]:
        """Exponential backoff with full jitter: retry n waits uniformly in [1, base * 2**n] s.

        Full jitter (not base * 2**n plus a little) spreads the retries of jobs that
        failed together, e.g. when the mail server came back, instead of sending them
        back in one wave. Whole seconds: RQ schedules retries in seconds.
        """
        return [max(1, round(rand() * self.backoff_base * 2 ** (n + 1))) for n in range(self.retries)]


EMAIL_JOB = "email"
REPORT_JOB = "report"
FANOUT_JOB = "fanout"  # a popular author's new post, to their followers' timelines (posts.jobs)

POLICIES: dict[str, JobPolicy] = {
    # About 2 s, 4 s, 8 s (full jitter), as a mail server blip lasts seconds.
    EMAIL_JOB: JobPolicy(queue=EMAIL, func="jobs.jobs.send_email", retries=3, backoff_base=1.0),
    REPORT_JOB: JobPolicy(queue=REPORTS, func="posts.jobs.build_report", retries=2, backoff_base=5.0),
    # Retried while the state role is away (about 2, 4, 8 s); a rerun may repeat some
    # timeline entries, which readers drop (feeds.selectors shows a post once a page).
    FANOUT_JOB: JobPolicy(queue=DEFAULT, func="posts.jobs.fanout_post", retries=3, backoff_base=1.0),
}


@dataclass(frozen=True)
class Quota:
    """How many jobs of a kind one person may ask for (jobs.services.job_enqueue).

    Only jobs a person asks for count (the API, the reports page, commands acting for
    someone); Kestrel's own mail (the welcome, "your report is ready") does not.
    """

    per_window: int  # jobs asked for in any QUOTA_WINDOW
    in_flight: int | None = None  # jobs queued or running at once; None: no such limit
    busy_retry_after: int = 30  # s: Retry-After when refused for a job in flight (reports take seconds)


QUOTA_WINDOW = 60 * 60  # s: the sliding window of Quota.per_window

QUOTAS: dict[str, Quota] = {
    # A report reads every post of its owner and leaves a file on disk: one at a time
    # is what the reports page shows, and six an hour covers any real use (a report
    # after each post of a busy hour) while a loop gets no further than six files.
    REPORT_JOB: Quota(per_window=6, in_flight=1),
    # Mail to oneself (the reports page's test mail) or, for staff, to others: each one
    # leaves through our mail server under our name, so a loop must stop early; ten an
    # hour is well above what anyone sends by hand.
    EMAIL_JOB: Quota(per_window=10),
}

# Retention (jobs.services.jobs_purge, scheduled by jobs/cron.py): files and rows that
# hold what people wrote go once used; rows never pushed to RQ stay (work not done).
REPORT_RETENTION = 7 * 24 * 60 * 60  # s, from the report's creation: its file, its row and its job row
JOB_RETENTION = 30 * 24 * 60 * 60  # s, from the job's creation: a pushed job's row
PURGE_BATCH = 500  # reports, then job rows, deleted per run at most (a run stays short)

# Worker liveness (RQ). A worker that dies with its job leaves it STARTED until its last
# heartbeat + JOB_MONITORING_INTERVAL + 60 s (RQ's fixed grace); the next registry
# cleanup, at most MAINTENANCE_INTERVAL later, retries or fails it. About 2 minutes in
# all, against about 15 with RQ's defaults (tests/jobs/test_worker_faults.py).
WORKER_TTL = 75  # s; an idle worker blocks WORKER_TTL - 15 s per dequeue and cleans up between
JOB_MONITORING_INTERVAL = 10  # s between heartbeats of a busy worker (one small Redis write)
MAINTENANCE_INTERVAL = 60  # s between registry cleanups (a few cheap lookups per queue)
# A job still running this long after its timeout (RQ's SIGALRM could not stop it) ends
# its worker process (jobs.workers); RQ's forking worker waits as long to kill a horse.
HARD_TIMEOUT_GRACE = 60  # s
