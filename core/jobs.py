from core.cacheaside import replay_pending_invalidations


def replay_invalidations() -> int:
    """Scheduled (jobs/cron.py): retry cache invalidations that failed while Redis was away."""
    return replay_pending_invalidations()


def sample_ops() -> dict[str, str]:
    """Scheduled (jobs/cron.py): one sample of Redis and Kestrel figures for the /ops charts."""
    from core.ops import ops_sample

    return ops_sample()
