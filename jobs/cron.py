"""Kestrel's periodic jobs, for RQ's cron scheduler: `manage.py rqcron jobs/cron.py`.

The scheduler only enqueues, on the `periodic` queue, which every worker listens to
first (jobs.queues.WORKER_QUEUES): a backlog of people's jobs never delays these. It is its
own process (one per deployment is enough, more are harmless: each run of these jobs
is safe alongside another).
"""

from __future__ import annotations

from django.utils.module_loading import import_string
from rq import cron

from jobs.queues import PERIODIC, QUEUE_TIMEOUTS

# (job function, by dotted path, and seconds between runs), each the longest something
# waits. Paths, not imports: the queue machinery runs the jobs of every app and imports none.
SCHEDULE = [
    ("posts.jobs.flush_view_counts", 60),  # a view before it reaches the database
    ("core.jobs.replay_invalidations", 60),  # a stale cached copy after a Redis outage
    ("jobs.jobs.drain_outbox", 60),  # a job recorded while Redis was away (and every pushed job's enqueued_at)
    ("ops.jobs.sample_ops", 60),  # a point on the /ops charts (a day of them in the capped stream)
    ("jobs.jobs.purge_expired", 600),  # a report or job row past its retention (jobs.queues)
]
PERIODIC_JOBS = [(import_string(path), interval) for path, interval in SCHEDULE]

for func, interval in PERIODIC_JOBS:
    cron.register(
        func,
        PERIODIC,
        interval=interval,
        # RQ's cron enqueues through a plain rq Queue, which does not see django-rq's
        # DEFAULT_TIMEOUT, so the queue's timeout is passed explicitly.
        job_timeout=QUEUE_TIMEOUTS[PERIODIC],
        # While no worker runs, runs pile up in the queue; one waiting longer than a
        # few intervals is superseded by newer ones and expires instead.
        ttl=5 * interval,
    )
