"""Redis keys and TTLs of the posts app."""

from core.keys import key

# Cache role ------------------------------------------------------------------------

POST_TTL = 300  # seconds; jittered +-10 % by core.cacheaside
POST_MISSING_TTL = 30  # a 404 is remembered this long (or until the post is created)
RECENT_POSTS_LIMIT = 50
WRITE_THROUGH_TTL = 24 * 60 * 60  # the article's 24 h for the stats hash; the list too
LEADERBOARD_TTL = 24 * 60 * 60


def post_detail(post_id: int) -> str:
    """STRING (JSON envelope), cache role, POST_TTL: one post as the API shows it."""
    return key("posts", "post", post_id)


def page_detail(page_id: int) -> str:
    """STRING (JSON envelope), cache role, POST_TTL: one standing page with its flushed view count."""
    return key("posts", "page", page_id)


def user_posts_recent(user_id: int) -> str:
    """LIST of JSON post summaries, newest first, cache role, WRITE_THROUGH_TTL, at most 50."""
    return key("posts", "user", user_id, "recent")


def user_posts_stats(user_id: int) -> str:
    """HASH (postCount, likesReceived, built), cache role, WRITE_THROUGH_TTL.

    `built` is set only by a rebuild from the database: a hash without it was created
    by a write-through increment on a missing key and is not trusted.
    """
    return key("posts", "user", user_id, "stats")


def leaderboard() -> str:
    """ZSET user id -> likes received, cache role, LEADERBOARD_TTL."""
    return key("posts", "leaderboard")


def leaderboard_version() -> str:
    """STRING counter, cache role, LEADERBOARD_TTL: bumped by every like, WATCHed by rebuilds."""
    return key("posts", "leaderboard", facet="version")


# State role (not rebuildable from the database: must not be evicted) ----------------

VIEW_FLUSH_EVERY = 1000  # the article's batch size
# How long a process's batch number outlives its last batch: a copy of a batch held by a
# hung server or a slow network and run later than this would count twice.
VIEW_BATCH_TTL = 24 * 60 * 60


def post_views(post_id: int) -> str:
    """STRING integer, state role, no TTL: views of a post not yet flushed to the database."""
    return key("posts", "post", post_id, "views")


def page_views(page_id: int) -> str:
    """STRING integer, state role, no TTL: views of a page not yet flushed to the database."""
    return key("posts", "page", page_id, "views")


def post_viewers(post_id: int) -> str:
    """HyperLogLog, state role, no TTL (12 KB at most): distinct viewers of a post."""
    return key("posts", "post", post_id, "viewers")


def views_dirty() -> str:
    """SET of "post:<id>" / "page:<id>", state role, no TTL: counters with views to flush."""
    return key("posts", "views", facet="dirty")


def view_batches(process: str) -> str:
    """STRING integer, state role, VIEW_BATCH_TTL: the last batch of views applied from one process.

    `process` is a random token each process draws (core.batching), never user input.
    """
    return key("posts", "views", process, "batch")
