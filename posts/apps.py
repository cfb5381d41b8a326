"""The posts app's configuration: content (posts, likes, pages, views, the leaderboard).

ready() registers its cache families and invalidation receivers.
"""

from django.apps import AppConfig


class PostsConfig(AppConfig):
    """The posts app (docs/design.md, "How the code is laid out").

    Depends on feeds and accounts, never the other way.
    """

    name = "posts"

    def ready(self) -> None:
        """Register the cache families (posts.selectors) and the receivers (posts.signals).

        core.cacheaside finds a family by its name, so it is registered before any write.
        """
        from posts import selectors, signals  # noqa: F401 - cache families and invalidation receivers
