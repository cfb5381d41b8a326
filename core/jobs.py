from core.cacheaside import replay_pending_invalidations


def replay_invalidations() -> int:
    """Scheduled (jobs/cron.py): retry cache invalidations that failed while Redis was away."""
    return replay_pending_invalidations()
