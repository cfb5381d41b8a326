"""Kestrel's Redis toolkit as a Django app.

ready() registers the Redis system checks (core.checks); the metrics need no set-up.
"""

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Kestrel core (Redis toolkit)"

    def ready(self) -> None:
        from core import checks  # noqa: F401 - registers the Redis system checks
