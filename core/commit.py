"""Side effects after commit, each on its own: one that fails is logged, the rest still run.

    after_commit(write_through_new_post, post)

Outside a transaction the callback runs at once without touching the database
(docs/design.md, "Side effects after commit", says what Django's own on_commit gets wrong).
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
