"""Redis keys and TTLs of the posts app, one builder per key (docs/design.md, "The key grammar").

Cache role: copies of rows, rebuilt from the database (posts, pages, an author's recent
posts and stats, the leaderboard). State role: view counts not yet in the database.
Hash tags: the id, except the leaderboard's and the view shards' (below).
"""

from core.keys import Rename, SplitSet, key

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


# The leaderboard and its version share one hash tag: the like script moves both, and a
# rebuild WATCHes one and writes the other. A ranking of everyone is one key by nature.
LEADERBOARD_TAG = "leaderboard"


def leaderboard() -> str:
    """The leaderboard (posts.leaderboard): everyone with likes, ranked.

    ZSET of zero-padded user id -> minus the likes received; cache role, LEADERBOARD_TTL.
    """
    return key("posts", "leaderboard", tag=LEADERBOARD_TAG)


def leaderboard_version() -> str:
    """The leaderboard's version: bumped by every like, WATCHed by rebuilds.

    STRING counter, cache role, LEADERBOARD_TTL.
    """
    return key("posts", "leaderboard", facet="version", tag=LEADERBOARD_TAG)


# State role (not rebuildable from the database: must not be evicted) ----------------

VIEW_FLUSH_EVERY = 1000  # the article's batch size
# How long a process's batch number outlives its last batch: a copy of a batch held by a
# hung server or a slow network and run later than this would count twice.
VIEW_BATCH_TTL = 24 * 60 * 60

# View counting keeps its keys in VIEW_SHARDS groups, each under one hash tag: a send
# (core.batching.apply_once) writes counters, viewers, the dirty set and the process's
# batch number in one script, and a flush takes counters and dirty members in one, so
# all of them must share a slot on Redis Cluster. One tag for every post would put all
# view counting on one primary; a tag per post would need a dirty set and a batch
# number per post. A post's shard is its id modulo VIEW_SHARDS; changing it renames
# every view key, so it needs a rename step like redis_rename_keys'.
VIEW_SHARDS = 16


def view_shard(obj_id: int) -> int:
    """The view shard of a post or page id."""
    return obj_id % VIEW_SHARDS


def _views_tag(shard: int) -> str:
    if not 0 <= shard < VIEW_SHARDS:
        raise ValueError(f"a view shard is in 0..{VIEW_SHARDS - 1}, not {shard!r}")
    return f"views.{shard}"


def post_views(post_id: int) -> str:
    """Views of a post not yet flushed to the database (posts.counters).

    STRING integer, state role, no TTL; in the post's view shard.
    """
    return key("posts", "post", post_id, "views", tag=_views_tag(view_shard(post_id)))


def page_views(page_id: int) -> str:
    """Views of a page not yet flushed to the database (posts.counters).

    STRING integer, state role, no TTL; in the page's view shard.
    """
    return key("posts", "page", page_id, "views", tag=_views_tag(view_shard(page_id)))


def post_viewers(post_id: int) -> str:
    """Distinct viewers of a post (posts.counters.post_unique_viewers).

    HyperLogLog, state role, no TTL (12 KB at most); in the post's view shard.
    """
    return key("posts", "post", post_id, "viewers", tag=_views_tag(view_shard(post_id)))


def views_dirty(shard: int) -> str:
    """The counters of one view shard with views to flush to the database (posts.counters).

    SET of "post:<id>" / "page:<id>", state role, no TTL.
    """
    return key("posts", "views", facet="dirty", tag=_views_tag(shard))


def view_batches(process: str, shard: int) -> str:
    """STRING integer, state role, VIEW_BATCH_TTL: the last batch of views applied from one process
    to one view shard.

    `process` is a random token each process draws (core.batching), never user input.
    """
    return key("posts", "views", process, "batch", tag=_views_tag(shard))


# The state role's families as named before hash tags (manage.py redis_rename_keys): the
# counters and viewers move to their view shard, the dirty set splits by shard. The
# processes' batch numbers are left to expire (VIEW_BATCH_TTL): a restarted process draws
# a new token, so nothing reads them again.


def _renamed_views(old: str) -> str | None:
    """posts:post:<id>:views, posts:post:<id>:viewers and posts:page:<id>:views, named now."""
    parts = old.split(":")
    if "{" in old or len(parts) != 5 or not parts[3].isdigit():
        return None
    builder = {("post", "views"): post_views, ("post", "viewers"): post_viewers, ("page", "views"): page_views}
    build = builder.get((parts[2], parts[4]))
    return build(int(parts[3])) if build is not None else None


def _dirty_set_of(member: str) -> str | None:
    kind, _, obj_id = member.partition(":")
    return views_dirty(view_shard(int(obj_id))) if kind in ("post", "page") and obj_id.isdigit() else None


RENAMES = (
    Rename("posts:post", "posts:post:*:view*", _renamed_views),
    Rename("posts:page", "posts:page:*:views*", _renamed_views),
    SplitSet("posts:views", "posts:views:dirty", _dirty_set_of),
)
