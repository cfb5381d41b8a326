"""System checks of the feeds app."""

from __future__ import annotations

from collections.abc import Sequence

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from feeds import sse


@register(deploy=False)
def check_stream_thread_budget(app_configs: Sequence[AppConfig] | None = None, **kwargs: object) -> list[CheckMessage]:
    """kestrel.E010: the per-process stream cap must leave gunicorn threads for ordinary requests."""
    problem = sse.thread_budget_error(threads=settings.KESTREL_GUNICORN_THREADS, streams=sse.max_streams())
    if problem is None:
        return []
    return [Error(problem, hint="See docs/deploy.md, 'Web: gunicorn with gthread'.", id="kestrel.E010")]
