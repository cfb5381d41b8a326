from django.apps import AppConfig


class FeedsConfig(AppConfig):
    name = "feeds"
    verbose_name = "Feeds and notifications"

    def ready(self) -> None:
        # Registers the system checks, and connects the receivers that end notification
        # streams on logout and token revocation.
        from feeds import checks, stream_access  # noqa: F401
