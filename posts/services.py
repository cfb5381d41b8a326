from accounts.models import User
from posts.models import Post


def post_create(*, author: User, title: str, content: str) -> Post:
    post = Post(author=author, title=title, content=content)
    post.full_clean()
    post.save()
    return post
