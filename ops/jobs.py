from ops.dashboard import ops_sample


def sample_ops() -> dict[str, str]:
    """Scheduled (jobs/cron.py): one sample of Redis and Kestrel figures for the /ops charts."""
    return ops_sample()
