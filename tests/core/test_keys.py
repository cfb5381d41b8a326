from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from accounts import keys as account_keys
from core.checks import check_key_prefix
from core.keys import django_cache_key, key, redact_key, with_tag


def test_keys_follow_the_grammar():
    assert key("posts", "post", 42) == "kestrel:posts:post:{42}"
    assert key("accounts", "user", 7, "followers") == "kestrel:accounts:user:{7}:followers"
    assert key("core", "metrics") == "kestrel:core:metrics"


def test_a_named_tag_goes_last_and_leaves_the_id_plain():
    assert key("feeds", "notified", "like.3.42", tag=7) == "kestrel:feeds:notified:like.3.42:{7}"
    assert key("posts", "views", "9f3c", "batch", tag="views.2") == "kestrel:posts:views:9f3c:batch:{views.2}"
    assert key("posts", "leaderboard", tag="leaderboard") == "kestrel:posts:leaderboard:{leaderboard}"
    assert with_tag(f"{key('core', 'lock')}:user:7:profile", "locks") == "kestrel:core:lock:user:7:profile:{locks}"
    with pytest.raises(ValueError, match="has a hash tag already"):
        with_tag(key("posts", "post", 42), "posts")


@override_settings(KESTREL_KEY_PREFIX="other")
def test_the_prefix_setting_separates_two_kestrels():
    assert key("posts", "post", 42) == "other:posts:post:{42}"


@pytest.mark.parametrize("prefix", ["{kestrel}", "kes{trel", "kestrel:a", "kes*", "Kestrel", ""])
def test_a_prefix_that_would_take_the_hash_tag_or_blur_the_families_is_refused(prefix):
    with override_settings(KESTREL_KEY_PREFIX=prefix):
        with pytest.raises(ValueError, match="KESTREL_KEY_PREFIX"):
            key("posts", "post", 42)
        assert [message.id for message in check_key_prefix()] == ["kestrel.E003"]
    assert check_key_prefix() == []


@pytest.mark.parametrize("hostile", ["a:b", "*", "x" * 65, "with space", "new\nline", "é", "{7}", "a}b{"])
def test_user_controlled_ids_are_hashed_into_one_plain_segment(hostile):
    built = account_keys.session(hostile)

    segment = built.removeprefix("kestrel:accounts:session:")
    assert segment.startswith("{h-")
    assert segment.endswith("}")
    assert len(segment) == 36
    assert ":" not in segment
    assert "*" not in segment
    assert built.count("{") == built.count("}") == 1  # the tag's braces alone


def test_a_hostile_tag_is_hashed_too():
    built = key("feeds", "notified", "like.3.42", tag="7}:{x")

    assert built.startswith("kestrel:feeds:notified:like.3.42:{h-")
    assert built.count("{") == built.count("}") == 1


def test_code_parts_are_validated():
    with pytest.raises(ValueError, match="must match"):
        key("posts", "Post:x")


def test_django_cache_api_uses_builder_keys_as_they_are(state_redis):
    session_key = account_keys.session("abc123")
    caches["sessions"].set(session_key, {"a": 1}, 60)
    caches["sessions"].set("third-party", 1, 60)

    assert state_redis.exists(session_key)
    assert state_redis.exists("kestrel:django:third-party")
    assert django_cache_key("kestrel:posts:post:{1}", "kestrel", 2) == "kestrel:posts:post:{1}:v2"


# --- Redaction: what /ops, redis_audit and the logs may show of a key ------------------

SESSION_ID = "k7yq2m9x0c4v1b8n6z3l5j"


@pytest.mark.parametrize(
    ("built", "shown"),
    [
        (account_keys.session(SESSION_ID), "kestrel:accounts:session:<redacted>"),
        (account_keys.jwt_revoked("jti-4f1c"), "kestrel:accounts:jwt:<redacted>:revoked"),
        (account_keys.jwt_family_revoked("fam-9a2"), "kestrel:accounts:jwt_family:<redacted>:revoked"),
        (key("core", "ratelimit", "0123abcd", "api"), "kestrel:core:ratelimit:<redacted>:api"),
        (f"kestrel:django:reset:{SESSION_ID}", "kestrel:django:<redacted>"),
        (f"other-program:{SESSION_ID}", "other-program:<redacted>"),
        (SESSION_ID, "<redacted>"),
        ("kestrel:nonsense", "kestrel:<redacted>"),
    ],
)
def test_credential_bearing_keys_are_shown_without_their_id(built, shown):
    assert redact_key(built) == shown
    assert redact_key(built.encode()) == shown


@pytest.mark.parametrize(
    "plain",
    [
        key("posts", "post", 42),
        account_keys.user_followers(7),
        account_keys.user_token_epoch(7),
        key("posts", "leaderboard"),
        "rq:queue:default",
    ],
)
def test_keys_with_no_credential_in_them_are_shown_whole(plain):
    assert redact_key(plain) == plain


def test_which_families_carry_credentials_is_a_setting(settings):
    settings.KESTREL_CREDENTIAL_KEY_FAMILIES = frozenset({"posts:post"})

    assert redact_key(key("posts", "post", 42)) == "kestrel:posts:post:<redacted>"
    assert redact_key(account_keys.session(SESSION_ID)) == account_keys.session(SESSION_ID)
