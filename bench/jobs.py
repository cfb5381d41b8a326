"""A job that does nothing: what the RQ worker itself costs per job (bench/jobqueue.py).

Kept alone in its module, with no imports, so a forking worker's work horse loads
nothing else to run it.
"""


def noop() -> None:
    return None
