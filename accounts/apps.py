"""The accounts app: identity (users, log-in, sessions, tokens, revocation, the follow graph's rows)."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Registers the app's cache families and invalidation receivers once Django is ready."""

    name = "accounts"

    def ready(self) -> None:
        from accounts import selectors, signals  # noqa: F401 - cache family and invalidation receivers
