"""Queue names and their policies. settings.RQ_QUEUES is built from this module.

Kept free of Django imports: settings.py reads it while settings are being built.
"""

DEFAULT = "default"
EMAIL = "email"
REPORTS = "reports"

# Seconds a job may run before the worker kills it (RQ's job timeout).
QUEUE_TIMEOUTS: dict[str, int] = {
    DEFAULT: 300,
    EMAIL: 60,
    REPORTS: 600,
}

# The order a worker listens in: email first, people wait on it.
WORKER_QUEUES: list[str] = [EMAIL, REPORTS, DEFAULT]
