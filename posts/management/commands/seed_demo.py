"""Demo data for `make run`: an admin, a few people and their posts, follows and likes.

Safe to run again: what exists is left as it is. Everything is made through the
services, so caches and streams are written as on the site.
"""

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Follow, User
from accounts.services import user_create
from feeds.services import follow_create
from posts.models import Like, Page, Post
from posts.services import post_create, post_like

DEMO_PASSWORD = "kestrel-demo-pass"  # demo data only, printed by `make run` on purpose  # nosec B105

PEOPLE = [
    ("ada", "ada@example.com", [("Hello, Kestrel", "First post! Redis sessions, here we come.")]),
    ("grace", "grace@example.com", [("On caching", "There are two hard things: naming, invalidation, off-by-one.")]),
    ("linus", "linus@example.com", [("Streams", "Reading about XADD and consumer groups today.")]),
]

PAGES = [
    ("about", "About Kestrel", "Kestrel is a small community site built on production Redis patterns."),
    ("guidelines", "Community guidelines", "Be kind, stay on topic, and credit your sources."),
]

# (who likes, whose post): gives the leaderboard something to rank.
LIKES = [("grace", "ada"), ("linus", "ada"), ("ada", "grace")]

# (who follows, whom): gives everyone a home timeline.
FOLLOWS = [("ada", "grace"), ("ada", "linus"), ("grace", "ada"), ("linus", "ada"), ("linus", "grace")]


class Command(BaseCommand):
    """manage.py seed_demo: the demo data, in one transaction (development only).

    Prints the demo logins and their shared password.
    """

    help = "Create a demo admin, a few demo users and posts (development only)."

    @transaction.atomic
    def handle(self, *args, **options):
        """Create what is missing of PEOPLE, PAGES, FOLLOWS and LIKES, then print the logins.

        In one transaction: a failure leaves nothing half made.
        """
        if not User.objects.filter(username="admin").exists():
            admin = user_create(email="admin@example.com", username="admin", password=DEMO_PASSWORD, is_staff=True)
            admin.is_superuser = True
            admin.save(update_fields=["is_superuser"])
        for username, email, posts in PEOPLE:
            user = User.objects.filter(username=username).first()
            if user is None:
                user = user_create(email=email, username=username, password=DEMO_PASSWORD)
            for title, content in posts:
                if not Post.objects.filter(author=user, title=title).exists():
                    post_create(author=user, title=title, content=content)
        for slug, title, body in PAGES:
            Page.objects.get_or_create(slug=slug, defaults={"title": title, "body": body})
        for follower, followee in FOLLOWS:
            fan, star = User.objects.get(username=follower), User.objects.get(username=followee)
            if not Follow.objects.filter(follower=fan, followee=star).exists():
                follow_create(follower=fan, followee=star)
        for liker, author in LIKES:
            post = Post.objects.filter(author__username=author).earliest("id")
            fan = User.objects.get(username=liker)
            if not Like.objects.filter(user=fan, post=post).exists():
                post_like(post=post, user=fan)

        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        self.stdout.write("  admin@example.com  (staff: /admin/ and /admin/rq/)")
        for _, email, _ in PEOPLE:
            self.stdout.write(f"  {email}")
