"""Keys used together share a hash slot; keys of different entities spread over the cluster.

On Redis Cluster every key of one Lua script, MULTI/EXEC, WATCH or multi-key command
must hash to one slot: the groups below are those of docs/design.md, "The key grammar",
each built by the builders the code uses, with realistic ids. redis-py's key_slot is
checked against a real cluster's CLUSTER KEYSLOT.
"""

from __future__ import annotations

from collections import Counter

import pytest
from redis.crc import key_slot

from accounts import keys as account_keys
from core.cacheaside import lease_key
from core.locks import fence_key, lock_key
from core.ratelimit.policies import Policy
from core.ratelimit.script import rate_limit_key
from devstack.redis_cluster import LocalCluster
from feeds import keys as feed_keys
from posts import keys as post_keys

POST, PAGE, USER, OTHER_USER = 4242, 4258, 981, 77  # the page in the post's view shard
PROCESS = "9f3c1a2b7e6d5c40"  # a process's token (core.batching)

GROUPS = {
    # core.cacheaside: the value and its lease (store script, MULTIs, invalidation's DEL).
    "post cache-aside": [post_keys.post_detail(POST), lease_key(post_keys.post_detail(POST))],
    "page cache-aside": [post_keys.page_detail(PAGE), lease_key(post_keys.page_detail(PAGE))],
    "profile cache-aside": [account_keys.user_profile(USER), lease_key(account_keys.user_profile(USER))],
    # accounts.services' mirror script (one call per set), accounts.selectors' leased rebuild.
    "followers mirror": [
        account_keys.user_followers(USER),
        account_keys.user_followers_rebuild(USER),
        lease_key(account_keys.user_followers(USER)),
    ],
    "following mirror": [
        account_keys.user_following(USER),
        account_keys.user_following_rebuild(USER),
        lease_key(account_keys.user_following(USER)),
    ],
    # posts.services' MULTI, posts.selectors' WATCHed rebuild, the family's invalidation.
    "author's list and stats": [
        post_keys.user_posts_recent(USER),
        post_keys.user_posts_stats(USER),
        lease_key(post_keys.user_posts_stats(USER)),
    ],
    # posts.leaderboard: the like script and the WATCHed rebuild.
    "leaderboard": [post_keys.leaderboard(), post_keys.leaderboard_version()],
    # core.batching.apply_once (a send), posts.counters' take script and give-back MULTI.
    "view shard": [
        post_keys.view_batches(PROCESS, post_keys.view_shard(POST)),
        post_keys.post_views(POST),
        post_keys.post_views(POST - 16),
        post_keys.page_views(PAGE),
        post_keys.post_viewers(POST),
        post_keys.views_dirty(post_keys.view_shard(POST)),
    ],
    # feeds.selectors' leased rebuild (WATCH), feeds.services' DEL of both.
    "timeline": [feed_keys.user_timeline(USER), feed_keys.user_timeline_rebuild(USER)],
    # feeds.notifications' scripts: notify (with its once-per-window claim), list, mark read.
    "notifications": [
        feed_keys.user_notifications(USER),
        feed_keys.user_notifications_read(USER),
        feed_keys.notified_once("like", OTHER_USER, POST, recipient_id=USER),
        feed_keys.notified_once("follow", OTHER_USER, USER, recipient_id=USER),
    ],
    # core.locks' acquire script: a lock and the fence counter.
    "locks": [
        lock_key(account_keys.user_profile_lock(USER)),
        lock_key("job:report"),
        lock_key("report:ada@example.com with spaces"),
        fence_key(),
    ],
    # core.ratelimit's script: one subject's counters under two policies of one algorithm.
    "one subject's rate limits": [
        rate_limit_key(Policy(name="api", limit=100, window=60), f"user:{USER}"),
        rate_limit_key(Policy(name="writes", limit=30, window=60), f"user:{USER}"),
    ],
}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(primaries=3) as cluster:
        yield cluster


def slot_ranges(cluster: LocalCluster) -> list[tuple[int, int, int]]:
    """(first slot, last slot, primary's port) of every range, from CLUSTER SLOTS."""
    node = cluster.client(cluster.primaries()[0][1])
    return sorted((first, last, port) for first, last, (_, port, *_), *_ in node.execute_command("CLUSTER", "SLOTS"))


def owner(ranges: list[tuple[int, int, int]], slot: int) -> int:
    return next(port for first, last, port in ranges if first <= slot <= last)


@pytest.mark.parametrize("group", GROUPS.values(), ids=GROUPS.keys())
def test_the_keys_of_a_group_share_one_slot(group):
    assert len(set(group)) == len(group) > 1
    assert len({key_slot(key.encode()) for key in group}) == 1, group


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS.values(), ids=GROUPS.keys())
def test_a_real_cluster_puts_each_group_in_one_slot(cluster, group):
    node = cluster.client(cluster.primaries()[0][1])
    slots = {node.execute_command("CLUSTER", "KEYSLOT", key) for key in group}
    assert slots == {key_slot(group[0].encode())}

    # A multi-key command on the primary that serves the slot: no CROSSSLOT.
    _, port = cluster.node_for_slot(slots.pop())
    assert cluster.client(port).exists(*group) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "family",
    [post_keys.post_detail, post_keys.post_views, feed_keys.user_timeline, account_keys.session],
    ids=["post", "post views", "timeline", "session"],
)
def test_keys_of_a_thousand_ids_spread_over_every_primary(cluster, family):
    ids = [f"{n:032x}" for n in range(1, 1001)] if family is account_keys.session else range(1, 1001)
    built = [family(obj_id) for obj_id in ids]
    node = cluster.client(cluster.primaries()[0][1])
    pipe = node.pipeline(transaction=False)
    for key in built:
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
    slots = pipe.execute()
    assert slots == [key_slot(key.encode()) for key in built]

    ranges = slot_ranges(cluster)
    per_primary = Counter(owner(ranges, slot) for slot in slots)
    assert set(per_primary) == {port for _, port in cluster.primaries()}
    if family is post_keys.post_views:
        # Sixteen view shards, not a thousand tags: spread, though not evenly.
        assert len(set(slots)) == post_keys.VIEW_SHARDS
    else:
        assert len(set(slots)) > 900
        assert all(250 <= count <= 420 for count in per_primary.values()), per_primary
