from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from accounts import keys as account_keys
from core.keys import django_cache_key, key


def test_keys_follow_the_grammar():
    assert key("posts", "post", 42) == "kestrel:posts:post:42"
    assert key("accounts", "user", 7, "followers") == "kestrel:accounts:user:7:followers"
    assert key("core", "metrics") == "kestrel:core:metrics"


@override_settings(KESTREL_KEY_PREFIX="other")
def test_the_prefix_setting_separates_two_kestrels():
    assert key("posts", "post", 42) == "other:posts:post:42"


@pytest.mark.parametrize("hostile", ["a:b", "*", "x" * 65, "with space", "new\nline", "é"])
def test_user_controlled_ids_are_hashed_into_one_plain_segment(hostile):
    built = account_keys.session(hostile)

    segment = built.removeprefix("kestrel:accounts:session:")
    assert segment.startswith("h-")
    assert len(segment) == 34
    assert ":" not in segment
    assert "*" not in segment


def test_code_parts_are_validated():
    with pytest.raises(ValueError, match="must match"):
        key("posts", "Post:x")


def test_django_cache_api_uses_builder_keys_as_they_are(state_redis):
    session_key = account_keys.session("abc123")
    caches["sessions"].set(session_key, {"a": 1}, 60)
    caches["sessions"].set("third-party", 1, 60)

    assert state_redis.exists(session_key)
    assert state_redis.exists("kestrel:django:third-party")
    assert django_cache_key("kestrel:posts:post:1", "kestrel", 2) == "kestrel:posts:post:1:v2"
