"""Distributed view counters for posts and pages (the reference article's part 6.3).

Each process counts views (and a post's viewers) in memory (core.batching) and sends
them every KESTREL_VIEW_FLUSH_INTERVAL seconds in one round trip on the state role, a
script call per view shard (pending counter, viewers' HyperLogLog, dirty set; no TTL;
posts.keys.view_shard). Pending views are taken
atomically and added to the row when a counter reaches VIEW_FLUSH_EVERY and every
minute. Failure policy: while Redis is away the buffer keeps counting and sends later.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Hashable, Iterable
from typing import Literal, cast

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils.crypto import salted_hmac
from redis.commands.core import Script

from core.batching import Apply, Batch, BatchBuffer, apply_once_many
from core.cacheaside import Family, invalidate
from core.commit import after_commit
from core.ratelimit.identity import client_ip
from core.redis import RedisClient, get_redis, is_unavailable
from core.scripts import script_queue
from posts import keys
from posts.keys import VIEW_FLUSH_EVERY
from posts.models import Page, Post
from posts.selectors import PAGE, POST

logger = logging.getLogger(__name__)

Kind = Literal["post", "page"]

_MODELS: dict[str, type[Post] | type[Page]] = {"post": Post, "page": Page}
_COUNTER_KEYS: dict[str, Callable[[int], str]] = {"post": keys.post_views, "page": keys.page_views}
_FAMILIES: dict[str, Family] = {"post": POST, "page": PAGE}  # their cached copies

# Takes counters whole and removes their members from the dirty set in one atomic step,
# so no member is ever out of the set while its counter still holds views.
_TAKE_LUA = """
-- KEYS: views_dirty, counter_1 .. counter_n   ARGV: member_1 .. member_n ("post:42" names counter_i)
-- Returns the views taken from each counter, in KEYS order (0 when none were pending).
local taken = {}
for i = 2, #KEYS do
  redis.call('SREM', KEYS[1], ARGV[i - 1])
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 0 then
    -- Take exactly what was read, never a blind DEL, and drop the key once it is at 0
    -- so an idle counter costs no memory. (Inside a script nothing can run between the
    -- GET and the DECRBY, so this always reaches 0; the form stays right even if the
    -- two are ever split.)
    if redis.call('DECRBY', KEYS[i], n) == 0 then
      redis.call('DEL', KEYS[i])
    end
  else
    n = 0
  end
  taken[#taken + 1] = n
end
return taken
"""


@functools.cache
def _take_script() -> Script:
    # Registered once per process: redis-py sends EVALSHA and reloads the script by
    # itself after a Redis restart (NOSCRIPT).
    return get_redis("state").register_script(_TAKE_LUA)


def viewer_id(request: HttpRequest) -> str:
    """Who is looking, for unique-viewer counts: "u:<id>" for a user, else "a:<hash>".

    The hash is an HMAC of the client address the rate limits use (core.ratelimit's
    client_ip), so no address reaches Redis and no header a client controls can make
    it a new viewer. Viewers behind one address count once.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"u:{user.pk}"
    address = client_ip(request, trusted_proxies=settings.KESTREL_RATE_LIMIT_TRUSTED_PROXIES)
    return _address_viewer(settings.SECRET_KEY, address)


@functools.lru_cache(maxsize=4096)
def _address_viewer(secret: str, address: str) -> str:
    # Cached: an HMAC costs more than the rest of counting a view.
    return "a:" + salted_hmac("kestrel.viewer", address, secret=secret, algorithm="sha256").hexdigest()[:20]


def _member(kind: str, obj_id: int) -> str:
    return f"{kind}:{obj_id}"


def record_post_view(*, post_id: int, viewer: str) -> int:
    """Count one view of a post by `viewer` (viewer_id); in memory, no I/O.

    Returns the post's views not yet in its row as this process knows them, this one
    included: add it to the view_count just read. Other processes' views show after
    this process's next send. Call it only for posts that exist: every id gets a
    state-role key without a TTL.
    """
    return view_buffer.add(("post", post_id), viewer)


def record_page_view(*, page_id: int, viewer: str) -> int:
    """Count one view of a page; returns its views not yet in the row, as record_post_view.

    `viewer` is accepted for symmetry with posts; pages keep no unique-viewer count.
    """
    return view_buffer.add(("page", page_id))


def flush_views() -> bool:
    """Send this process's buffered views to Redis now; False if Redis was unavailable.

    What could not be sent is kept for the next send. The background thread calls it
    every interval; tests call it instead of waiting.
    """
    return view_buffer.flush()


def _send_views(batch: Batch) -> dict[Hashable, int]:
    """core.batching's send: one apply_once call per view shard (one round trip), then the
    database flush of counters now due.

    Returns each counter's pending total after the send, less what the flush moved.
    A failed flush is logged and leaves the views in Redis for the scheduled flush.
    """
    state = get_redis("state")
    # The buffer's keys are (kind, id): record_post_view and record_page_view add them.
    objects = cast(list[tuple[Kind, int]], list(batch.counts))
    viewers = cast(dict[tuple[Kind, int], set[str]], batch.members)
    applies = [
        Apply(
            sequence_key=keys.view_batches(batch.process, shard),
            seq=batch.seq,
            ttl=keys.VIEW_BATCH_TTL,
            counters={_COUNTER_KEYS[kind](obj_id): batch.counts[(kind, obj_id)] for kind, obj_id in group},
            hyperloglogs={
                keys.post_viewers(obj_id): viewers[(kind, obj_id)]
                for kind, obj_id in group
                if (kind, obj_id) in viewers
            },
            sets={keys.views_dirty(shard): [_member(kind, obj_id) for kind, obj_id in group]},
        )
        for shard, group in _by_shard(objects).items()
    ]
    totals: dict[str, int] = {}
    for _, shard_totals in apply_once_many(state, applies):
        totals.update(shard_totals)
    pending: dict[Hashable, int] = {obj: totals[_COUNTER_KEYS[obj[0]](obj[1])] for obj in objects}
    # `>=`, not `==`: a counter given back after a failed flush stays above the
    # threshold, so every later send retries it. Concurrent takes are harmless: one
    # gets the views, the others take 0.
    due = [obj for obj in objects if pending[obj] >= VIEW_FLUSH_EVERY]
    if due:
        try:
            moved = _flush_due(due)
        except Exception as exc:  # noqa: BLE001 - the batch is in Redis: it must not be sent again
            # The views wait in Redis for the next send or the scheduled flush.
            level = logging.WARNING if is_unavailable(exc) else logging.ERROR
            logger.log(level, "Flush of views %s failed; left for the scheduled flush", due, exc_info=True)
            moved = {}
        for obj, n in moved.items():
            pending[obj] = max(0, pending[obj] - n)
    return pending


def _by_shard(objects: Iterable[tuple[Kind, int]]) -> dict[int, list[tuple[Kind, int]]]:
    """`objects` grouped by view shard (posts.keys.view_shard), in their order."""
    groups: dict[int, list[tuple[Kind, int]]] = {}
    for kind, obj_id in objects:
        groups.setdefault(keys.view_shard(obj_id), []).append((kind, obj_id))
    return groups


view_buffer = BatchBuffer(
    "views",
    _send_views,
    interval=settings.KESTREL_VIEW_FLUSH_INTERVAL,
    # Reached only while Redis is away: ~50 MB, each post with a new viewer (~480 bytes).
    max_keys=settings.KESTREL_VIEW_BUFFER_MAX_KEYS,
    max_members=settings.KESTREL_VIEW_BUFFER_MAX_KEYS,
    # Send early rather than let one script call grow past a few thousand arguments.
    flush_keys=1_000,
    flush_members=10_000,
)


def _flush_due(members: list[tuple[Kind, int]]) -> dict[tuple[Kind, int], int]:
    """The article's batch write, for counters that reached the threshold; the views moved of each.

    Inside a transaction it runs after commit instead (and reports nothing moved yet).
    """
    if transaction.get_connection().in_atomic_block:
        # Inside the caller's transaction a rollback would undo our UPDATE after the
        # views had left Redis: flush once it has committed (robust: a failure there
        # is logged, never raised into the caller's commit).
        after_commit(_flush_now, members)
        return {}
    return _flush_now(members)


def _flush_now(members: list[tuple[Kind, int]]) -> dict[tuple[Kind, int], int]:
    # The views are safely counted in Redis; a database failure here must not lose them
    # or stop the sender: they are given back and a later send or the schedule retries.
    try:
        return _flush(get_redis("state"), members)
    except DatabaseError:
        logger.warning("Flush of views %s failed; left for the scheduled flush", members, exc_info=True)
        return {}


def flush_all_views(*, batch: int = 500) -> int:
    """Move every dirty counter's pending views to the database; returns the views moved.

    Run it outside any transaction (a job does): each batch commits on its own. Safe to
    run in several processes at once: a counter's views are taken by one of them only.
    A database error gives the current batch back and propagates (the job fails and the
    next run retries); earlier batches stay flushed.
    """
    state = get_redis("state")
    moved = 0
    for shard in range(keys.VIEW_SHARDS):
        dirty = keys.views_dirty(shard)
        # One pass over what is dirty now. Under steady traffic views re-add members as
        # fast as we flush them; those wait for the next run instead of keeping this one
        # going for ever.
        budget = state.scard(dirty)
        while budget > 0:
            # SRANDMEMBER only reads: members leave the set inside the take script.
            # With a count, SRANDMEMBER answers a list of members.
            members = cast(list[bytes], state.srandmember(dirty, min(batch, budget)))
            if not members:
                break
            budget -= len(members)
            parsed, unknown = _parse_members(members)
            if unknown:
                # Not ours (nothing in Kestrel writes them): drop them, or every run would
                # sample them again.
                logger.warning("Dropping unknown members %r of the dirty-views set", unknown)
                state.srem(dirty, *unknown)
            moved += sum(_flush(state, parsed).values())
    return moved


def _parse_members(members: Iterable[bytes]) -> tuple[list[tuple[Kind, int]], list[bytes]]:
    parsed: list[tuple[Kind, int]] = []
    unknown: list[bytes] = []
    for raw in members:
        kind, _, obj_id = raw.decode(errors="replace").partition(":")
        if kind in _MODELS and obj_id.isdigit():
            parsed.append((cast(Kind, kind), int(obj_id)))
        else:
            unknown.append(raw)
    return parsed, unknown


def _flush(state: RedisClient, members: list[tuple[Kind, int]]) -> dict[tuple[Kind, int], int]:
    """Take the members' pending views from Redis and add them to their rows; the views moved of each.

    One take script per view shard (its dirty set and counters; one round trip), then one
    database transaction; if that fails, for any reason, the views go back to Redis and
    the error propagates.
    """
    if not members:
        return {}
    # Sorted so that concurrent flushers lock rows in the same order (no deadlocks).
    members = sorted(members)
    groups = _by_shard(members)
    calls = [
        (
            [keys.views_dirty(shard), *(_COUNTER_KEYS[kind](obj_id) for kind, obj_id in group)],
            [_member(kind, obj_id) for kind, obj_id in group],
        )
        for shard, group in groups.items()
    ]
    taken: dict[tuple[Kind, int], int] = {}
    for group, amounts in zip(groups.values(), _take(state, calls), strict=True):
        taken.update(zip(group, (int(n) for n in amounts), strict=True))
    batch = [(kind, obj_id, taken[(kind, obj_id)]) for kind, obj_id in members if taken[(kind, obj_id)] > 0]
    if not batch:
        return {}
    try:
        # One transaction per batch: one lock and one commit on SQLite, and a failure
        # leaves no row half-updated, so giving back the whole batch is exact.
        with transaction.atomic():
            applied = [
                (kind, obj_id, n, _MODELS[kind].objects.filter(pk=obj_id).update(view_count=F("view_count") + n))
                for kind, obj_id, n in batch
            ]
    except BaseException:
        # Anything, including the worker's job timeout arriving mid-update: the rows
        # did not change, so the views go back where a later flush will find them.
        _give_back(state, batch)
        raise
    moved = {(kind, obj_id): n for kind, obj_id, n, updated in applied if updated}
    # A deleted post or page: its views have nowhere to go, and its unique-viewer
    # count (no TTL) is dropped with them.
    gone_posts = [obj_id for kind, obj_id, _, updated in applied if not updated and kind == "post"]
    if gone_posts:
        with state.pipeline(transaction=False) as pipe:
            for obj_id in gone_posts:
                pipe.delete(keys.post_viewers(obj_id))  # one DEL each: they are in several shards
            pipe.execute()
    _invalidate_cached_copies([(kind, obj_id) for kind, obj_id, _, updated in applied if updated])
    return moved


def _take(state: RedisClient, calls: list[tuple[list[str], list[str]]]) -> list[list[int]]:
    """The take script once per (keys, args) in `calls`: one EVALSHA, or a pipeline of them."""
    if len(calls) == 1:
        (shard_keys, args) = calls[0]
        return [_take_script()(keys=shard_keys, args=args, client=state)]
    with state.pipeline(transaction=False) as pipe:
        script_queue(pipe, _take_script(), calls)
        return cast(list[list[int]], pipe.execute()[1:])  # after the SCRIPT LOAD's


def _give_back(state: RedisClient, batch: list[tuple[Kind, int, int]]) -> None:
    # MULTI/EXEC per view shard: the views and their dirty members come back together or
    # not at all (a counter and its member are always in the same shard).
    amounts = {(kind, obj_id): n for kind, obj_id, n in batch}
    for shard, group in _by_shard(amounts).items():
        with state.pipeline(transaction=True) as pipe:
            for kind, obj_id in group:
                pipe.incrby(_COUNTER_KEYS[kind](obj_id), amounts[(kind, obj_id)])
                pipe.sadd(keys.views_dirty(shard), _member(kind, obj_id))
            pipe.execute()


def _invalidate_cached_copies(objects: list[tuple[Kind, int]]) -> None:
    # After the commit, so that cached copies are re-read with the new view_count
    # (until then a reader shows the old count plus a smaller pending count: a dip of
    # one batch for the milliseconds between the take and the invalidation).
    for kind, obj_id in objects:
        invalidate(_FAMILIES[kind].name, obj_id)


def pending_views(kind: Kind, ids: list[int]) -> dict[int, int]:
    """Views of each post (or page) not yet flushed to the database, by id.

    One MGET on the state role (keys.post_views / keys.page_views); Redis errors
    propagate, as everywhere on the state role.
    """
    counter_key = _COUNTER_KEYS[kind]
    if not ids:
        return {}
    values = get_redis("state").mget([counter_key(obj_id) for obj_id in ids])
    return {obj_id: int(value or 0) for obj_id, value in zip(ids, values, strict=True)}


def post_unique_viewers(post_id: int) -> int:
    """Distinct viewers of a post, estimated by HyperLogLog (0.81 % standard error).

    One PFCOUNT of keys.post_viewers on the state role, as of each process's last
    send; Redis errors propagate, as everywhere on the state role.
    """
    return get_redis("state").pfcount(keys.post_viewers(post_id))
