from django.apps import AppConfig


class PostsConfig(AppConfig):
    name = "posts"

    def ready(self) -> None:
        from posts import selectors, signals  # noqa: F401 - cache families and invalidation receivers
