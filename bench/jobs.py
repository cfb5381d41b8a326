"""Jobs that do nothing, for bench/jobqueue.py: what RQ costs per job, and what Kestrel adds.

`noop` is a bare function, enqueued with `Queue.enqueue`: the worker's own cost. It
imports nothing, so a forking worker's work horse loads nothing else to run it.
`kestrel_noop` is a Kestrel job with no work in it: enqueued through
jobs.services.job_enqueue (the outbox row, the email policy's retries, callback and
TTLs), it loads its row, checks it has not run and marks it done, as the email job does.
"""


def noop() -> None:
    return None


def kestrel_noop(job_id: str) -> dict:
    from jobs.models import Job
    from jobs.services import job_complete

    job = Job.objects.get(pk=job_id)
    if job.completed_at is not None:
        return job.result
    result: dict = {}
    job_complete(job=job, result=result)
    return result
