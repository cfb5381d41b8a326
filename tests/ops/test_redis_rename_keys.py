"""manage.py redis_rename_keys: an upgrade keeps the state role's keys, renamed to the
grammar with hash tags, against the suite's private Redis server."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts import keys as account_keys
from core.locks import fence_key, lock_key
from core.ratelimit.policies import Policy
from core.ratelimit.script import rate_limit_key
from feeds import keys as feed_keys
from posts import keys as post_keys

P = settings.KESTREL_KEY_PREFIX
SESSION, JTI, FAMILY = "k7yq2m9x0c4v1b8n6z3l5j0a9s8d7f6g", "4f1c" * 8, "9a2e" * 8
USER, POST, PAGE = 981, 4242, 4258
HOUR_MS = 3_600_000
LIMIT_KEY = rate_limit_key(Policy(name="auth_ip", limit=10, window=60), "ip:203.0.113.7")


def old_grammar(state_redis) -> dict[str, str]:
    """Keys as the release before hash tags wrote them; returns old name -> new name."""
    renamed = {
        f"{P}:accounts:session:{SESSION}": account_keys.session(SESSION),
        f"{P}:accounts:jwt:{JTI}:revoked": account_keys.jwt_revoked(JTI),
        f"{P}:accounts:jwt_family:{FAMILY}:revoked": account_keys.jwt_family_revoked(FAMILY),
        f"{P}:accounts:user:{USER}:token_epoch": account_keys.user_token_epoch(USER),
        LIMIT_KEY.replace("{", "").replace("}", ""): LIMIT_KEY,
        f"{P}:core:lock:user:{USER}:profile": lock_key(account_keys.user_profile_lock(USER)),
        f"{P}:core:lock_fence": fence_key(),
        f"{P}:feeds:user:{USER}:timeline": feed_keys.user_timeline(USER),
        f"{P}:feeds:user:{USER}:timeline_rebuild": feed_keys.user_timeline_rebuild(USER),
        f"{P}:feeds:user:{USER}:activity": feed_keys.user_activity(USER),
        f"{P}:feeds:user:{USER}:notifications": feed_keys.user_notifications(USER),
        f"{P}:feeds:user:{USER}:notifications_read": feed_keys.user_notifications_read(USER),
        f"{P}:feeds:user:{USER}:stream_leases": feed_keys.user_stream_leases(USER),
        f"{P}:posts:post:{POST}:views": post_keys.post_views(POST),
        f"{P}:posts:post:{POST}:viewers": post_keys.post_viewers(POST),
        f"{P}:posts:page:{PAGE}:views": post_keys.page_views(PAGE),
    }
    old = iter(renamed)
    state_redis.set(next(old), '{"_auth_user_id":"981"}', px=2 * HOUR_MS)
    state_redis.set(next(old), "logout", px=HOUR_MS)
    state_redis.set(next(old), "reused", px=24 * HOUR_MS)
    state_redis.set(next(old), "3", px=24 * HOUR_MS)
    state_redis.set(next(old), "1700000000000000:4", px=60_000)
    state_redis.set(next(old), "a1b2:1700000000000001", px=5_000)
    state_redis.set(next(old), "1700000000000001")
    state_redis.xadd(next(old), {"post": POST, "author": 7}, id="1700000000000-1")
    state_redis.set(next(old), "lease", px=5_000)
    state_redis.xadd(next(old), {"action": "liked", "target": POST})
    notification_id = state_redis.xadd(next(old), {"kind": "like", "message": "@bob liked"})
    state_redis.set(next(old), notification_id)
    state_redis.zadd(next(old), {"stream-1": 1700000060000})
    state_redis.pexpire(f"{P}:feeds:user:{USER}:stream_leases", 120_000)
    state_redis.set(next(old), 37)
    state_redis.pfadd(next(old), "u:1", "u:2", "a:3")
    state_redis.set(next(old), 5)
    state_redis.sadd(f"{P}:posts:views:dirty", f"post:{POST}", f"page:{PAGE}", "comment:1")
    return renamed


LEFT_TO_EXPIRE = (
    f"{P}:feeds:notified:like.77.{POST}",  # its new name needs the post's author
    f"{P}:posts:views:9f3c1a2b7e6d5c40:batch",  # a stopped process's batch number
)
UNCHANGED = (f"{P}:core:ops:samples", f"{P}:django:third-party", "rq:queue:default")


def snapshot(state_redis) -> dict[bytes, tuple[bytes, object]]:
    """Every key with its type and value (DUMP), for comparing runs."""
    return {name: (state_redis.type(name), state_redis.dump(name)) for name in state_redis.scan_iter()}


def run(*args: str) -> str:
    out = StringIO()
    call_command("redis_rename_keys", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def upgraded_from_old_grammar(state_redis):
    """The old grammar's keys, and the keys the command must leave as they are."""
    renamed = old_grammar(state_redis)
    for name in LEFT_TO_EXPIRE:
        state_redis.set(name, "1", px=HOUR_MS)
    state_redis.xadd(UNCHANGED[0], {"sample": "{}"})
    state_redis.set(UNCHANGED[1], "x")
    state_redis.rpush(UNCHANGED[2], "job-1")
    return renamed


def test_a_dry_run_counts_and_changes_nothing(state_redis, upgraded_from_old_grammar):
    before = snapshot(state_redis)

    output = run("--dry-run")

    assert snapshot(state_redis) == before
    assert "accounts:session     1 would be renamed" in output
    assert "feeds:user           6 would be renamed" in output
    assert "posts:views          2 members would move to their sets, 1 unknown members dropped" in output
    assert "Dry run: nothing was changed." in output


def test_every_old_key_is_found_under_its_new_name_with_its_value_and_ttl(state_redis, upgraded_from_old_grammar):
    renamed = upgraded_from_old_grammar
    before = {old: (state_redis.dump(old), state_redis.pttl(old)) for old in renamed}

    output = run()

    for old, new in renamed.items():
        assert not state_redis.exists(old), old
        value, pttl = before[old]
        assert state_redis.dump(new) == value, new
        if pttl == -1:
            assert state_redis.pttl(new) == -1, new  # no TTL before, none after
        else:
            assert pttl - 2_000 < state_redis.pttl(new) <= pttl, new
    # The dirty set split by view shard; a member Kestrel never writes is dropped.
    assert not state_redis.exists(f"{P}:posts:views:dirty")
    assert state_redis.smembers(post_keys.views_dirty(post_keys.view_shard(POST))) == {
        f"post:{POST}".encode(),
        f"page:{PAGE}".encode(),
    }
    for name in LEFT_TO_EXPIRE:
        assert 0 < state_redis.pttl(name) <= HOUR_MS
    for name in UNCHANGED:
        assert state_redis.exists(name)
    assert "accounts:session     1 renamed, 0 already named so" in output
    assert "core:lock_fence      1 renamed" in output
    assert "feeds:user           6 renamed" in output
    assert "posts:post           2 renamed" in output
    assert "Cache role: old keys left to expire" in output


def test_a_second_run_changes_nothing(state_redis, upgraded_from_old_grammar):
    run()
    after_first = snapshot(state_redis)

    output = run()

    assert snapshot(state_redis) == after_first
    assert "accounts:session     0 renamed, 1 already named so" in output
    assert "posts:views          0 members moved" in output
    assert " skipped " not in output


def test_a_key_whose_new_name_exists_is_skipped_never_overwritten(state_redis, upgraded_from_old_grammar):
    old = f"{P}:accounts:user:{USER}:token_epoch"
    state_redis.set(account_keys.user_token_epoch(USER), "4")  # written by the new release already

    output = run()

    assert state_redis.get(account_keys.user_token_epoch(USER)) == b"4"
    assert state_redis.get(old) == b"3"  # left for the operator, with its TTL
    assert "accounts:user        0 renamed, 1 already named so, 1 skipped (the new name exists" in output


def test_a_batch_smaller_than_a_family_renames_it_all(state_redis):
    sessions = [f"{n:032x}" for n in range(25)]
    for session in sessions:
        state_redis.set(f"{P}:accounts:session:{session}", "{}", px=HOUR_MS)

    output = run("--batch", "4")

    assert all(state_redis.exists(account_keys.session(session)) for session in sessions)
    assert "accounts:session     25 renamed" in output


def test_a_batch_below_one_is_refused():
    with pytest.raises(CommandError, match="--batch"):
        run("--batch", "0")
