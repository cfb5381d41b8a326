from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        from accounts import selectors, signals  # noqa: F401 - cache family and invalidation receivers
