"""Jobs that do nothing, for bench/jobqueue.py: what RQ costs per job, and what Kestrel adds.

`noop` is a bare function, enqueued with `Queue.enqueue`: the worker's own cost. It
imports nothing, so a forking worker's work horse loads nothing else to run it.
`kestrel_noop` is a Kestrel job with no work in it: enqueued through
jobs.services.job_enqueue (the outbox row, the email policy's retries, callback and
TTLs), it reads its row's payload unless a run completed it, and marks it done, as the email job does.
"""


def noop() -> None:
    return None


def kestrel_noop(job_id: str) -> dict:
    from jobs.selectors import job_payload_to_run
    from jobs.services import job_complete

    if job_payload_to_run(job_id=job_id) is None:
        return {"ran": False}
    result: dict = {}
    job_complete(job_id=job_id, result=result)
    return result
