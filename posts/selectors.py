from django.db.models import QuerySet

from posts.models import Post


def post_list_recent(*, limit: int = 20) -> QuerySet[Post]:
    """The newest posts, for the home page."""
    return Post.objects.select_related("author").order_by("-created_at", "-id")[:limit]
