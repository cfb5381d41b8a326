"""The RQ worker of `manage.py rqworker` (settings.RQ["WORKER_CLASS"]).

django-rq's command has no flags for these intervals; RQ's defaults leave a killed
worker's job unnoticed for up to about 15 minutes.
"""

from rq import Worker

from jobs.queues import JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL


class KestrelWorker(Worker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("job_monitoring_interval", JOB_MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)
