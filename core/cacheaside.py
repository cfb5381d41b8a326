"""Cache-aside with an L1, leases, XFetch and negative caching (docs/design.md).

    POST = cacheaside.Family("post", keys.post_detail, ttl=300, l1_ttl=2)
    data = cacheaside.get_or_load(POST, 42, lambda: load_post_dict(42))

Cache role. Fails open: a Redis error is logged, counted (`cache.error`) and the loader
answers; an invalidation that cannot reach Redis waits in core.models.PendingInvalidation.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

from django.conf import settings
from redis.commands.core import Script

from core import metrics
from core.commit import after_commit
from core.keys import redact_key
from core.l1 import L1, MISS, LocalCache, Miss
from core.redis import UNAVAILABLE_ERRORS, RedisClient, RedisPipeline, get_redis, is_unavailable
from core.scripts import script_queue

logger = logging.getLogger(__name__)

LEASE_MS = 5_000  # a loader that takes longer than this loses its lease
WAIT_SECONDS = 2.0  # how long a reader waits for another process's load before loading itself
JITTER = 0.10

Clock = Callable[[], float]
Rand = Callable[[], float]

# What a family with a Redis tier caches: a JSON object (the loader's dict, or its copy
# read back from Redis). None is an object that does not exist, cached as missing.
CachedDict: TypeAlias = dict[str, Any]
Loader = Callable[[], CachedDict | None]

V = TypeVar("V")  # what a local-only family caches: anything its loader returns


@dataclass(frozen=True)
class Family:
    """A kind of cached object: its key builder, TTLs and metrics label.

    `name` is also the "type" of invalidation messages, as in the article:
    {"type": "post", "id": 42}.
    """

    name: str
    key: Callable[[Any], str]
    ttl: int
    missing_ttl: int = 30
    l1_ttl: float = 0.0  # seconds in this process's memory; 0 keeps the family out of L1
    beta: float = 1.0  # XFetch eagerness: > 1 refreshes earlier, 0 never early
    single_flight: bool = True  # off only to measure what the lease saves
    # An L1 partition of this many entries for the family alone (0: the shared L1).
    l1_max_entries: int = 0
    # Other families whose invalidation of an id drops this family's entry for it too.
    dropped_with: tuple[str, ...] = ()

    @property
    def local_only(self) -> bool:
        """No Redis tier (ttl 0): the family lives in each process's L1 alone."""
        return self.ttl == 0


_families: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Make a family known to the invalidation bus (done where it is defined)."""
    existing = _families.get(family.name)
    if existing is not None and existing != family:
        raise ValueError(f"Cache family {family.name!r} is already registered differently")
    if family.local_only and family.l1_ttl <= 0:
        raise ValueError(f"Cache family {family.name!r} has neither a Redis tier nor an L1")
    _families[family.name] = family
    return family


def family(name: str) -> Family:
    return _families[name]


def _l1_cache(fam: Family) -> LocalCache:
    return _l1.partition(fam.name, fam.l1_max_entries) if fam.l1_max_entries else _l1.cache


def _drop_from_l1(family_name: str, obj_id: Any) -> None:
    """Drop the L1 entries an invalidation of (family_name, obj_id) names, here."""
    for fam in list(_families.values()):
        if fam.name == family_name or family_name in fam.dropped_with:
            _l1_cache(fam).delete(fam.key(obj_id))


def _on_invalidation_message(payload: dict[str, Any]) -> None:
    _drop_from_l1(payload["type"], payload["id"])


_l1 = L1(_on_invalidation_message)


def l1() -> L1:
    return _l1


# --- Reads ---------------------------------------------------------------------------


def lease_key(key: str) -> str:
    """STRING (the loader's token), the cache role, LEASE_MS: a load of `key` in flight.

    `key` plus a facet, so it shares the value's hash tag: the scripts and MULTIs below
    use both in one call, which Redis Cluster allows only within one slot.
    """
    return f"{key}:lock"


def _envelope(value: CachedDict | None, delta: float, ttl: int, now: float) -> str:
    return json.dumps({"v": value, "d": round(delta, 6), "x": now + ttl}, separators=(",", ":"))


def _jittered(ttl: int, rand: Rand) -> int:
    return max(1, round(ttl * (1 - JITTER + 2 * JITTER * rand())))


def should_refresh_early(*, delta: float, expiry: float, beta: float, now: float, rand: Rand) -> bool:
    """XFetch (Vattani et al., 2015): true with a probability that rises as expiry nears.

    -ln(rand) is exponentially distributed with mean 1, so on average a reader
    recomputes about delta*beta seconds before expiry: long loads refresh earlier.
    """
    if beta <= 0 or delta <= 0:
        return False
    return now - delta * beta * math.log(1.0 - rand()) >= expiry


# KEYS: value key, lease key. ARGV: lease token, envelope, ttl seconds.
# Stores the value only if the caller still holds the lease, then releases it.
_STORE_IF_LEASED = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

_store_script: Script | None = None


def _store_script_for(client: RedisClient) -> Script:
    global _store_script
    if _store_script is None:
        _store_script = client.register_script(_STORE_IF_LEASED)
    return _store_script


def _store_if_leased(client: RedisClient, key: str, token: str, envelope: str, ttl: int) -> bool:
    script = _store_script_for(client)
    return bool(script(keys=[key, lease_key(key)], args=[token, envelope, ttl], client=client))


def get_or_load(
    fam: Family,
    obj_id: Any,
    loader: Loader,
    *,
    clock: Clock = time.time,
    rand: Rand = random.random,
) -> CachedDict | None:
    """The cached dict for `obj_id`, or None when the loader says it does not exist.

    The dict may be shared with other requests through the L1: treat it as read-only
    and build responses as new dicts (`{**data, "views": n}`).
    """
    if fam.local_only:
        raise ValueError(f"Cache family {fam.name!r} has no Redis tier: read it with get_or_load_local")
    if not settings.KESTREL_CACHE_ENABLED:
        return loader()
    key = fam.key(obj_id)
    now = clock()

    use_l1 = fam.l1_ttl > 0 and settings.KESTREL_L1_ENABLED and _l1.usable()
    l1_cache = _l1_cache(fam)
    if use_l1:
        hit = l1_cache.get(key, now)
        if hit is not MISS:
            metrics.incr("cache.hit", family=fam.name, tier="l1")
            # The shared L1 holds Any; under this family's key, what this function stored.
            return cast(CachedDict | None, hit)

    client = get_redis("cache")
    try:
        raw = client.get(key)
    except UNAVAILABLE_ERRORS as exc:
        return _fail_open(fam, exc, loader)

    if raw is not None:
        envelope = json.loads(raw)
        value: CachedDict | None = envelope["v"]
        if should_refresh_early(delta=envelope["d"], expiry=envelope["x"], beta=fam.beta, now=now, rand=rand):
            refreshed = _refresh_early(fam, client, key, loader, clock, rand)
            if refreshed is not MISS:
                value = refreshed
        metrics.incr("cache.hit", family=fam.name, tier="redis")
        if use_l1:
            l1_cache.set(key, value, min(fam.l1_ttl, max(0.0, envelope["x"] - now)), now)
        return value

    metrics.incr("cache.miss", family=fam.name)
    value, stored = _load_cold(fam, client, key, loader, clock, rand)
    if use_l1 and stored:
        # Only a value Redis accepted under our lease: had an invalidation come in
        # during the load, the lease would be gone and so would this copy.
        l1_cache.set(key, value, fam.l1_ttl, now)
    return value


def get_or_load_local(
    fam: Family,
    obj_id: Any,
    loader: Callable[[], V | None],
    *,
    fresh: Callable[[V], bool] | None = None,
    clock: Clock = time.monotonic,
) -> V | None:
    """The value of a local-only family (ttl 0): this process's L1 copy, else `loader()`'s.

    A copy `fresh` refuses (the caller has read a newer version elsewhere) is loaded
    again. A loaded value is kept only if no invalidation reached this process while
    it loaded (LocalCache.generation), and never while the bus is not listening: then
    every read calls the loader. A None from the loader is not kept. Share the value
    read-only, as with get_or_load.
    """
    if not (settings.KESTREL_CACHE_ENABLED and settings.KESTREL_L1_ENABLED and _l1.usable()):
        return loader()
    cache = _l1_cache(fam)
    key = fam.key(obj_id)
    hit = cache.get(key, clock())
    if hit is not MISS and (fresh is None or fresh(hit)):
        metrics.incr("cache.hit", family=fam.name, tier="l1")
        # The L1 holds Any; under this family's key, what `loader` returned (never None).
        return cast(V, hit)
    metrics.incr("cache.miss" if hit is MISS else "cache.stale", family=fam.name)
    since = cache.generation
    value = loader()
    metrics.incr("cache.load", family=fam.name)
    if value is not None:
        cache.set(key, value, fam.l1_ttl, clock(), unless_changed_since=since)
    return value


def _fail_open(fam: Family, exc: Exception, loader: Loader) -> CachedDict | None:
    # Cache role: fail open. The database answers instead; the page is slower, not wrong.
    metrics.incr("cache.error", family=fam.name)
    logger.warning("Cache role unavailable reading %s; loading from the database: %s", fam.name, exc)
    return loader()


def _timed_load(loader: Loader) -> tuple[CachedDict | None, float]:
    started = time.perf_counter()
    value = loader()
    return value, time.perf_counter() - started


def _ttl_for(fam: Family, value: CachedDict | None, rand: Rand) -> int:
    return _jittered(fam.ttl if value is not None else fam.missing_ttl, rand)


def _load_and_store(
    fam: Family, client: RedisClient, key: str, token: str, loader: Loader, clock: Clock, rand: Rand
) -> tuple[CachedDict | None, bool]:
    """Load, then store under the lease. Returns the value and whether Redis took it."""
    value, delta = _timed_load(loader)
    metrics.incr("cache.load", family=fam.name)
    ttl = _ttl_for(fam, value, rand)
    try:
        stored = _store_if_leased(client, key, token, _envelope(value, delta, ttl, clock()), ttl)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        metrics.incr("cache.error", family=fam.name)
        logger.warning("Cache role unavailable storing %s: %s", redact_key(key), exc)
        return value, False
    if not stored:
        metrics.incr("cache.lease_lost", family=fam.name)
    return value, stored


def _refresh_early(
    fam: Family, client: RedisClient, key: str, loader: Loader, clock: Clock, rand: Rand
) -> CachedDict | None | Miss:
    """XFetch fired: refresh if no one else is (the lease), else keep serving the current value."""
    token = uuid.uuid4().hex
    try:
        if not client.set(lease_key(key), token, nx=True, px=LEASE_MS):
            return MISS
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        return MISS
    metrics.incr("cache.early_refresh", family=fam.name)
    return _load_and_store(fam, client, key, token, loader, clock, rand)[0]


def _load_cold(
    fam: Family, client: RedisClient, key: str, loader: Loader, clock: Clock, rand: Rand
) -> tuple[CachedDict | None, bool]:
    if not fam.single_flight:
        return _load_and_store_unleased(fam, client, key, loader, clock, rand), False
    token = uuid.uuid4().hex
    try:
        # The lease and a second look at the value in one MULTI: another reader may
        # have stored the value between our GET and now, and then we need no load.
        pipe = client.pipeline(transaction=True)
        pipe.set(lease_key(key), token, nx=True, px=LEASE_MS)
        pipe.get(key)
        leased, raw = pipe.execute()
        if raw is not None:
            if leased:
                client.delete(lease_key(key))
            return json.loads(raw)["v"], False
    except UNAVAILABLE_ERRORS as exc:
        return _fail_open(fam, exc, loader), False

    if leased:
        return _load_and_store(fam, client, key, token, loader, clock, rand)

    # Someone else is loading: wait for their value instead of querying too.
    metrics.incr("cache.wait", family=fam.name)
    deadline = time.monotonic() + WAIT_SECONDS
    pause = 0.002
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        try:
            # One MULTI: the value and the lease as of the same instant. Read apart,
            # the loader could store and release in between and we would load again.
            pipe = client.pipeline(transaction=True)
            pipe.get(key)
            pipe.exists(lease_key(key))
            raw, lease_held = pipe.execute()
            if raw is not None:
                return json.loads(raw)["v"], False
            if not lease_held:
                break  # the loader gave up or its lease was invalidated: load ourselves
        except UNAVAILABLE_ERRORS as exc:
            return _fail_open(fam, exc, loader), False
    value, _ = _timed_load(loader)
    metrics.incr("cache.load", family=fam.name)
    return value, False


def _load_and_store_unleased(
    fam: Family, client: RedisClient, key: str, loader: Loader, clock: Clock, rand: Rand
) -> CachedDict | None:
    value, delta = _timed_load(loader)
    metrics.incr("cache.load", family=fam.name)
    ttl = _ttl_for(fam, value, rand)
    try:
        client.set(key, _envelope(value, delta, ttl, clock()), ex=ttl)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
    return value


# --- Many objects at once ---------------------------------------------------------------

# load_many(ids) -> {id: dict}; an id left out does not exist.
LoadMany = Callable[[list[Any]], Mapping[Any, CachedDict]]


def get_many(
    fam: Family,
    ids: list[Any],
    load_many: LoadMany,
    *,
    clock: Clock = time.time,
    rand: Rand = random.random,
) -> list[CachedDict | None]:
    """The cached dicts for `ids`, in their order; None where the object does not exist.

    The L1, one MGET, then the misses' leases in one round trip, ONE `load_many(ids) ->
    {id: dict}` (an id left out is cached as missing) and one pipeline of stores. An id
    leased by another process is loaded with the rest, not waited for, and not stored.
    Fails open like get_or_load.
    """
    unique = list(dict.fromkeys(ids))
    if not unique:
        return []
    if not settings.KESTREL_CACHE_ENABLED:
        loaded = load_many(unique)
        return [loaded.get(obj_id) for obj_id in ids]
    now = clock()
    found: dict[Any, CachedDict | None] = {}
    pending = unique
    use_l1 = fam.l1_ttl > 0 and settings.KESTREL_L1_ENABLED and _l1.usable()
    if use_l1:
        pending = []
        l1_cache = _l1_cache(fam)
        for obj_id in unique:
            hit = l1_cache.get(fam.key(obj_id), now)
            if hit is MISS:
                pending.append(obj_id)
            else:
                found[obj_id] = hit
        if found:
            metrics.incr("cache.hit", len(found), family=fam.name, tier="l1")
    if pending:
        found.update(_many_from_redis(fam, pending, load_many, use_l1, now, clock, rand))
    return [found.get(obj_id) for obj_id in ids]


def _many_from_redis(
    fam: Family, ids: list[Any], load_many: LoadMany, use_l1: bool, now: float, clock: Clock, rand: Rand
) -> dict[Any, CachedDict | None]:
    client = get_redis("cache")
    keys = [fam.key(obj_id) for obj_id in ids]
    try:
        raws = client.mget(keys)
    except UNAVAILABLE_ERRORS as exc:
        return _fail_open_many(fam, exc, ids, load_many)

    values: dict[Any, CachedDict | None] = {}
    l1_ttls: dict[Any, float] = {}  # what goes into the L1, for how long
    missing: list[Any] = []
    refresh: list[Any] = []
    for obj_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            missing.append(obj_id)
            continue
        envelope = json.loads(raw)
        values[obj_id] = envelope["v"]
        l1_ttls[obj_id] = min(fam.l1_ttl, max(0.0, envelope["x"] - now))
        if should_refresh_early(delta=envelope["d"], expiry=envelope["x"], beta=fam.beta, now=now, rand=rand):
            refresh.append(obj_id)
    if values:
        metrics.incr("cache.hit", len(values), family=fam.name, tier="redis")
    if missing:
        metrics.incr("cache.miss", len(missing), family=fam.name)

    if missing or refresh:
        leased, loaded = _load_many_leased(fam, client, missing, refresh, load_many, clock, rand)
        values.update(loaded)
        for obj_id in missing:
            l1_ttls.pop(obj_id, None)
        for obj_id in refresh:
            if obj_id in loaded:
                l1_ttls.pop(obj_id)  # our copy, not necessarily what Redis holds
        l1_ttls.update({obj_id: fam.l1_ttl for obj_id in leased})
    if use_l1:
        l1_cache = _l1_cache(fam)
        for obj_id, ttl in l1_ttls.items():
            l1_cache.set(fam.key(obj_id), values[obj_id], ttl, now)
    return values


def _load_many_leased(
    fam: Family,
    client: RedisClient,
    missing: list[Any],
    refresh: list[Any],
    load_many: LoadMany,
    clock: Clock,
    rand: Rand,
) -> tuple[set[Any], dict[Any, CachedDict | None]]:
    """Lease, load and store the misses and the refreshes: (ids Redis stored, values loaded).

    A refresh leased elsewhere keeps the value already read; a miss leased elsewhere is
    loaded with the rest but not stored (never waited for: one query serves the page).
    """
    token = uuid.uuid4().hex
    guarded = missing if fam.single_flight else []
    try:
        leased, second_look, releases = _take_leases(fam, client, token, guarded, refresh)
    except UNAVAILABLE_ERRORS as exc:
        metrics.incr("cache.error", family=fam.name)
        logger.warning("Cache role unavailable leasing %s; loading from the database: %s", fam.name, exc)
        leased, second_look, releases = set(), {}, []
        refresh = []  # keep serving what was read
    if refresh and leased:
        metrics.incr("cache.early_refresh", len(leased.intersection(refresh)), family=fam.name)

    values: dict[Any, CachedDict | None] = dict(second_look)
    to_load = [obj_id for obj_id in missing if obj_id not in second_look]
    to_load += [obj_id for obj_id in refresh if obj_id in leased]
    delta = 0.0
    if to_load:
        started = time.perf_counter()
        loaded = load_many(to_load)
        delta = time.perf_counter() - started  # the batch's time: the batch is what a refresh reloads
        metrics.incr("cache.load", len(to_load), family=fam.name)
        values.update({obj_id: loaded.get(obj_id) for obj_id in to_load})

    to_store = [obj_id for obj_id in to_load if obj_id in leased]
    unguarded = [] if fam.single_flight else [obj_id for obj_id in to_load if obj_id not in leased]
    if not (to_store or unguarded or releases):
        return set(), values
    try:
        stored = _store_many(fam, client, token, values, to_store, unguarded, releases, delta, clock, rand)
    except UNAVAILABLE_ERRORS as exc:
        metrics.incr("cache.error", family=fam.name)
        logger.warning("Cache role unavailable storing %s: %s", fam.name, exc)
        return set(), values
    if len(stored) < len(to_store):
        metrics.incr("cache.lease_lost", len(to_store) - len(stored), family=fam.name)
    return stored, values


def _take_leases(
    fam: Family, client: RedisClient, token: str, missing: list[Any], refresh: list[Any]
) -> tuple[set[Any], dict[Any, CachedDict | None], list[str]]:
    """One round trip: a lease on each miss and each refresh, and a second look at each miss.

    Returns the ids leased (a miss only if still missing), the misses another reader
    stored since the MGET, and the leases taken on those (to release).
    """
    pipe = client.pipeline(transaction=False)
    for obj_id in missing:
        pipe.set(lease_key(fam.key(obj_id)), token, nx=True, px=LEASE_MS)
        pipe.get(fam.key(obj_id))
    for obj_id in refresh:
        pipe.set(lease_key(fam.key(obj_id)), token, nx=True, px=LEASE_MS)
    replies = pipe.execute()
    leased: set[Any] = set()
    second_look: dict[Any, CachedDict | None] = {}
    releases: list[str] = []
    for index, obj_id in enumerate(missing):
        got_lease, raw = replies[2 * index], replies[2 * index + 1]
        if raw is not None:
            second_look[obj_id] = json.loads(raw)["v"]
            if got_lease:
                releases.append(lease_key(fam.key(obj_id)))
        elif got_lease:
            leased.add(obj_id)
    leased.update(obj_id for obj_id, got_lease in zip(refresh, replies[2 * len(missing) :], strict=True) if got_lease)
    return leased, second_look, releases


def _store_many(
    fam: Family,
    client: RedisClient,
    token: str,
    values: dict[Any, CachedDict | None],
    to_store: list[Any],
    unguarded: list[Any],
    releases: list[str],
    delta: float,
    clock: Clock,
    rand: Rand,
) -> set[Any]:
    """One pipeline: each leased value stored if its lease still holds (the ids stored),
    the values of an unguarded family stored as they are, leases no longer needed released."""
    calls: list[tuple[list[str], list[str | int]]] = []
    for obj_id in to_store:
        key, ttl = fam.key(obj_id), _ttl_for(fam, values[obj_id], rand)
        calls.append(([key, lease_key(key)], [token, _envelope(values[obj_id], delta, ttl, clock()), ttl]))
    pipe = client.pipeline(transaction=False)
    script_queue(pipe, _store_script_for(client), calls)
    for obj_id in unguarded:
        ttl = _ttl_for(fam, values[obj_id], rand)
        pipe.set(fam.key(obj_id), _envelope(values[obj_id], delta, ttl, clock()), ex=ttl)
    for release in releases:
        pipe.delete(release)  # one DEL each: the leases of a list are in as many slots as its ids
    replies = pipe.execute()
    took = replies[1 : 1 + len(to_store)] if to_store else []  # after the SCRIPT LOAD's reply
    return {obj_id for obj_id, stored in zip(to_store, took, strict=True) if stored}


def _fail_open_many(fam: Family, exc: Exception, ids: list[Any], load_many: LoadMany) -> dict[Any, CachedDict | None]:
    # Cache role: fail open, as get_or_load does: one query answers for every id.
    metrics.incr("cache.error", family=fam.name)
    logger.warning("Cache role unavailable reading %s; loading from the database: %s", fam.name, exc)
    loaded = load_many(ids)
    return {obj_id: loaded.get(obj_id) for obj_id in ids}


# --- Invalidation --------------------------------------------------------------------


def invalidate(family_name: str, obj_id: Any) -> None:
    """Drop an object from every cache tier on every server once the transaction commits.

    Deleting inside the transaction would let a concurrent reader re-cache the old
    row before the commit; after commit (plus the lease) it cannot. Outside a
    transaction the callback runs at once.
    """
    after_commit(invalidate_now, family_name, obj_id)


def invalidate_now(family_name: str, obj_id: Any, *, pipe: RedisPipeline | None = None) -> bool:
    """DEL the value and its lease and PUBLISH the message, in one round trip.

    With `pipe` (a cache-role pipeline holding the caller's own commands), they ride in
    it and it runs here: a write's other cache updates cost no round trip of their own.
    Returns False (and records the invalidation in the outbox) when Redis did not answer.
    """
    fam = _families[family_name]
    if _invalidate(fam, obj_id, pipe):
        return True
    from core.models import PendingInvalidation

    PendingInvalidation.objects.create(family=fam.name, obj_id=str(obj_id))
    return False


def _invalidate(fam: Family, obj_id: Any, pipe: RedisPipeline | None = None) -> bool:
    key = fam.key(obj_id)
    _drop_from_l1(fam.name, obj_id)
    from core.l1 import invalidation_channel

    message = json.dumps({"type": fam.name, "id": obj_id})
    try:
        if pipe is None:
            pipe = get_redis("cache").pipeline(transaction=False)
        if not fam.local_only:
            pipe.delete(key, lease_key(key))
        pipe.publish(invalidation_channel(), message)
        pipe.execute()
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        metrics.incr("cache.invalidation_failed", family=fam.name)
        logger.warning("Could not invalidate %s %s (%s); queued in the outbox", fam.name, obj_id, exc)
        return False
    metrics.incr("cache.invalidation", family=fam.name)
    return True


def replay_pending_invalidations() -> int:
    """Retry invalidations that failed while Redis was away; returns how many objects were invalidated.

    An outage queues a row per failed write, and a hot post gets hundreds: each object
    is invalidated once (one round trip), which covers every row queued for it before
    the replay began, so a long queue drains in one run. Stops at the first failure
    (Redis still away): what is left stays queued for the next run.
    """
    from core.models import PendingInvalidation

    ceiling = PendingInvalidation.objects.order_by("-id").values_list("id", flat=True).first()
    if ceiling is None:
        return 0
    queued = PendingInvalidation.objects.filter(id__lte=ceiling)
    done = 0
    for family, raw_id in queued.order_by().values_list("family", "obj_id").distinct():
        if family in _families:
            obj_id: Any = int(raw_id) if raw_id.isdigit() else raw_id
            if not _invalidate(_families[family], obj_id):
                break  # still unreachable: its rows stay for the next run
            done += 1
        queued.filter(family=family, obj_id=raw_id).delete()
    return done
