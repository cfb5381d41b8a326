"""Redis keys and TTLs of the posts app, one builder per key (docs/design.md, "The key grammar").

Cache role: copies of rows, rebuilt from the database (posts, pages, an author's recent
posts and stats, the leaderboard). State role: view counts not yet in the database.
"""

from core.keys import key

# Cache role ------------------------------------------------------------------------

POST_TTL = 300  # seconds; jittered +-10 % by core.cacheaside
POST_MISSING_TTL = 30  # a 404 is remembered this long (or until the post is created)
RECENT_POSTS_LIMIT = 50
WRITE_THROUGH_TTL = 24 * 60 * 60  # the article's 24 h for the stats hash; the list too
LEADERBOARD_TTL = 24 * 60 * 60


def post_detail(post_id: int) -> str:
    """One post as the API shows it (posts.selectors.POST, core.cacheaside).

    STRING (JSON envelope), cache role, POST_TTL; a 404 for POST_MISSING_TTL.
    """
    return key("posts", "post", post_id)


def page_detail(page_id: int) -> str:
    """One standing page with its flushed view count (posts.selectors.PAGE, core.cacheaside).

    STRING (JSON envelope), cache role, POST_TTL; a 404 for POST_MISSING_TTL.
    """
    return key("posts", "page", page_id)


def user_posts_recent(user_id: int) -> str:
    """An author's recent posts (family "user_posts"), trusted only beside user_posts_stats.

    LIST of JSON post summaries, newest first, at most RECENT_POSTS_LIMIT; cache role,
    WRITE_THROUGH_TTL.
    """
    return key("posts", "user", user_id, "recent")


def user_posts_stats(user_id: int) -> str:
    """An author's stats, the key of family "user_posts": deleting it rebuilds the list too.

    HASH (postCount, likesReceived, built), cache role, WRITE_THROUGH_TTL. `built` is
    set only by a rebuild from the database: a hash without it was created by a
    write-through increment on a missing key and is not trusted.
    """
    return key("posts", "user", user_id, "stats")


def leaderboard() -> str:
    """The leaderboard (posts.leaderboard): everyone with likes, ranked.

    ZSET of zero-padded user id -> minus the likes received; cache role, LEADERBOARD_TTL.
    """
    return key("posts", "leaderboard")


def leaderboard_version() -> str:
    """The leaderboard's version: bumped by every like, WATCHed by rebuilds.

    STRING counter, cache role, LEADERBOARD_TTL.
    """
    return key("posts", "leaderboard", facet="version")


# State role (not rebuildable from the database: must not be evicted) ----------------

VIEW_FLUSH_EVERY = 1000  # the article's batch size
# How long a process's batch number outlives its last batch: a copy of a batch held by a
# hung server or a slow network and run later than this would count twice.
VIEW_BATCH_TTL = 24 * 60 * 60


def post_views(post_id: int) -> str:
    """Views of a post not yet flushed to the database (posts.counters).

    STRING integer, state role, no TTL.
    """
    return key("posts", "post", post_id, "views")


def page_views(page_id: int) -> str:
    """Views of a page not yet flushed to the database (posts.counters).

    STRING integer, state role, no TTL.
    """
    return key("posts", "page", page_id, "views")


def post_viewers(post_id: int) -> str:
    """Distinct viewers of a post (posts.counters.post_unique_viewers).

    HyperLogLog, state role, no TTL (12 KB at most).
    """
    return key("posts", "post", post_id, "viewers")


def views_dirty() -> str:
    """The counters with views to flush to the database (posts.counters).

    SET of "post:<id>" / "page:<id>", state role, no TTL.
    """
    return key("posts", "views", facet="dirty")


def view_batches(process: str) -> str:
    """STRING integer, state role, VIEW_BATCH_TTL: the last batch of views applied from one process.

    `process` is a random token each process draws (core.batching), never user input.
    """
    return key("posts", "views", process, "batch")
