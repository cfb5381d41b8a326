"""The RQ worker of `manage.py rqworker` (settings.RQ["WORKER_CLASS"]).

django-rq's command has no flags for these intervals; RQ's defaults leave a killed
worker's job unnoticed for up to about 15 minutes.
"""

from rq import Worker

from core import batching
from jobs.queues import JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL


class KestrelWorker(Worker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)

    def perform_job(self, *args, **kwargs):
        try:
            return super().perform_job(*args, **kwargs)
        finally:
            # A forking worker's work horse ends with os._exit, which runs no atexit
            # handler: whatever a job counted in memory (core.batching) is sent here.
            batching.flush_all()
