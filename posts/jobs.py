"""Jobs of the posts app: thin wrappers that call a service (STYLE.md rule 9)."""

from __future__ import annotations

from posts.counters import flush_all_views


def flush_view_counts() -> int:
    """Move pending view counts from Redis to the database; scheduled by jobs/cron.py."""
    return flush_all_views()
