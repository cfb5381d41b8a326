"""Kestrel's periodic jobs, for RQ's cron scheduler: `manage.py rqcron jobs/cron.py`.

The scheduler only enqueues; a worker listening on the queue runs the job. It is its
own process (one per deployment is enough, more are harmless: each run of these jobs
is safe alongside another).
"""

from __future__ import annotations

from rq import cron

from core.jobs import replay_invalidations
from jobs.jobs import drain_outbox
from jobs.queues import DEFAULT, QUEUE_TIMEOUTS
from posts.jobs import flush_view_counts

VIEW_FLUSH_INTERVAL = 60  # seconds: the most a view waits before it reaches the database

cron.register(
    flush_view_counts,
    DEFAULT,
    interval=VIEW_FLUSH_INTERVAL,
    # RQ's cron enqueues through a plain rq Queue, which does not see django-rq's
    # DEFAULT_TIMEOUT, so the queue's timeout is passed explicitly.
    job_timeout=QUEUE_TIMEOUTS[DEFAULT],
    # While no worker runs, runs pile up in the queue; a run waiting longer than a few
    # intervals is superseded by the newer ones and expires instead.
    ttl=5 * VIEW_FLUSH_INTERVAL,
)

INVALIDATION_REPLAY_INTERVAL = 60  # seconds: the longest a stale copy outlives a Redis outage

cron.register(
    replay_invalidations,
    DEFAULT,
    interval=INVALIDATION_REPLAY_INTERVAL,
    job_timeout=QUEUE_TIMEOUTS[DEFAULT],
    ttl=5 * INVALIDATION_REPLAY_INTERVAL,
)

OUTBOX_DRAIN_INTERVAL = 60  # seconds: the longest a job recorded while Redis was away waits

cron.register(
    drain_outbox,
    DEFAULT,
    interval=OUTBOX_DRAIN_INTERVAL,
    job_timeout=QUEUE_TIMEOUTS[DEFAULT],
    ttl=5 * OUTBOX_DRAIN_INTERVAL,
)
