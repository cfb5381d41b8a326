"""Side effects after commit, each on its own: one that fails is logged, the rest still run.

    after_commit(write_through_new_post, post)

is `transaction.on_commit(partial(write_through_new_post, post), robust=True)`, except
that it works: Django logs a failing robust callback by its `__qualname__`, which a
`functools.partial` lacks, so the logging itself raised, the remaining callbacks were
skipped and the request that had committed answered 500 (seen with PostgreSQL going
away mid-request). The callback registered here carries the function's name.

Outside a transaction it runs at once without asking the database anything: Django's
on_commit connects to check autocommit, so with the database down a side effect of a
Redis-only write (a token revoked at log-out) raised after that write had happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)


def after_commit(func: Callable[..., object], /, *args: object, using: str | None = None, **kwargs: object) -> None:
    """Run `func(*args, **kwargs)` once the current transaction commits (at once outside one)."""

    def callback() -> None:
        func(*args, **kwargs)

    callback.__name__ = getattr(func, "__name__", type(func).__name__)
    callback.__qualname__ = getattr(func, "__qualname__", callback.__name__)
    if not transaction.get_connection(using).in_atomic_block:
        try:
            callback()
        except Exception:
            logger.exception("Error calling %s after commit", callback.__qualname__)
        return
    transaction.on_commit(callback, using=using, robust=True)
