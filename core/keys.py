"""The key grammar every app's keys.py builds on.

    <prefix>:<app>:<entity>[:{<id>}][:<facet>]          e.g. kestrel:posts:post:{42}:views
    <prefix>:<app>:<entity>[:<id>][:<facet>]:{<tag>}    e.g. kestrel:feeds:notified:like.3.42:{7}

The prefix is settings.KESTREL_KEY_PREFIX (env REDIS_KEY_PREFIX), so two Kestrels,
or a test run, can share one Redis server. Builders return the full key: the same
string works with a raw client and with Django's cache API (see django_cache_key).

The part in braces is the key's hash tag: on Redis Cluster only it is hashed, so keys
with the same tag share a slot, as the keys of one script, MULTI or WATCH must. By
default the id is the tag, so an entity's keys stay together and different entities
spread over the cluster. A key that a script uses with another entity's keys, or a
structure global by nature, names its tag instead (`tag=`), appended last. Nothing
before the tag may hold a brace: not the prefix, not an id (safe_id), not a name.
See docs/design.md, "The key grammar".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.@+-]{1,64}\Z")
# As config.settings checks REDIS_KEY_PREFIX.
_PREFIX = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")


def key(
    app: str,
    entity: str,
    id: int | str | None = None,
    facet: str | None = None,
    *,
    tag: int | str | None = None,
) -> str:
    """Build a key; `app`, `entity` and `facet` are code, `id` may come from a user.

    The id, in braces, is the key's hash tag; with `tag` the id stays plain and the
    tag goes last instead (the module's docstring). A key with neither has no tag.
    An id or tag that is not short and plain (a cookie value, an email, free text) is
    hashed, so user input can never add a `:` segment, a brace, a glob character or
    a megabyte-long key.
    """
    for part in (app, entity, facet):
        if part is not None and part not in _checked_names:
            _check_name(part)
    parts = [_prefix or _read_prefix(), app, entity]
    if id is not None:
        parts.append(safe_id(id) if tag is not None else "{" + safe_id(id) + "}")
    if facet is not None:
        parts.append(facet)
    if tag is not None:
        parts.append("{" + safe_id(tag) + "}")
    return ":".join(parts)


def with_tag(built: str, tag: int | str) -> str:
    """`built` (a key without a tag) with `tag` appended: for a key whose last segments
    are not an id and a facet (core.locks' readable names)."""
    if "{" in built:
        raise ValueError(f"{built!r} has a hash tag already")
    return f"{built}:{{{safe_id(tag)}}}"


# The prefix, read once: a feed page builds about fifty keys, and every read of a
# setting goes through LazySettings. Reset when a test overrides the setting.
_prefix = ""


def _read_prefix() -> str:
    global _prefix
    prefix = settings.KESTREL_KEY_PREFIX
    if not prefix_ok(prefix):
        raise ValueError(f"KESTREL_KEY_PREFIX {prefix!r} must match {_PREFIX.pattern}")
    _prefix = prefix
    return _prefix


def prefix_ok(prefix: object) -> bool:
    """Whether `prefix` can start every key: a short plain word. No brace, so that the
    first brace of a key is its hash tag's; no colon or glob character, so that SCAN
    patterns and key families stay exact."""
    return isinstance(prefix, str) and _PREFIX.match(prefix) is not None


@receiver(setting_changed)
def _prefix_changed(*, setting: str, **kwargs: object) -> None:
    global _prefix
    if setting == "KESTREL_KEY_PREFIX":
        _prefix = ""


# Names already checked: the parts are code, a handful of strings, and a feed page
# builds about fifty keys.
_checked_names: set[str] = set()


def _check_name(part: str) -> None:
    if not _NAME.match(part):
        raise ValueError(f"Key part {part!r} must match {_NAME.pattern}")
    _checked_names.add(part)


def safe_id(value: int | str) -> str:
    if isinstance(value, bool):
        raise TypeError("A key id cannot be a bool")
    if isinstance(value, int):
        return str(value)
    if _SAFE_ID.match(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()[:32]


def pattern(app: str, entity: str = "*") -> str:
    """A SCAN MATCH pattern for every key of an app (or one entity of it)."""
    return key(app, entity) + "*" if entity != "*" else f"{settings.KESTREL_KEY_PREFIX}:{app}:*"


# --- Renames: the grammar before hash tags -------------------------------------------
#
# Before hash tags every id stood plain (kestrel:accounts:session:<id>). An upgrade renames
# the state role's keys in place (manage.py redis_rename_keys); each keys module lists its
# families in RENAMES. The cache role's old keys are left to expire.


@dataclass(frozen=True)
class Rename:
    """How one family's keys were named before hash tags: `match` (a SCAN MATCH pattern
    after "<prefix>:") finds them, `new_name(old key)` names each now, or answers None
    for a key that is not an old name (a new one, or another family's)."""

    family: str  # "<app>:<entity>": what the command counts under
    match: str
    new_name: Callable[[str], str | None]


@dataclass(frozen=True)
class SplitSet:
    """A SET that hash tags split in several: each member of the old key (`old`, after
    "<prefix>:") moves to `new_set(member)`, or is dropped where that answers None."""

    family: str
    old: str
    new_set: Callable[[str], str | None]


def tag_the_id(family: str, facet: str | None = None) -> Rename:
    """The usual rename: <prefix>:<family>:<id>[:<facet>] becomes <prefix>:<family>:{<id>}[:<facet>],
    what key() now builds from the same id; with `facet`, only keys that end in it."""
    lengths = (5,) if facet is not None else (4, 5)  # prefix, app, entity, id, facet

    def new_name(old: str) -> str | None:
        parts = old.split(":")
        if "{" in old or len(parts) not in lengths or (facet is not None and parts[4] != facet):
            return None
        parts[3] = "{" + parts[3] + "}"
        return ":".join(parts)

    return Rename(family, f"{family}:*" if facet is None else f"{family}:*:{facet}", new_name)


def django_cache_key(key: str, key_prefix: str, version: int) -> str:
    """KEY_FUNCTION of every cache alias.

    Kestrel's builders already return full keys, used as they are. Keys from Django
    or third-party apps (`cache.set("foo", ...)`) are namespaced under the prefix so
    that clearing Kestrel's keys by SCAN finds them too.
    """
    if not key.startswith(f"{key_prefix}:"):
        key = f"{key_prefix}:django:{key}"
    return key if int(version) == 1 else f"{key}:v{version}"


REDACTED = "<redacted>"


def redact_key(key: str | bytes) -> str:
    """`key` as it may be shown or logged: credential-bearing ids replaced by REDACTED.

    The families whose id is a credential or derived from one (a session id, a
    token's jti or family, a rate-limit digest) are data: settings
    KESTREL_CREDENTIAL_KEY_FAMILIES, "<app>:<entity>" each. A key outside the grammar
    (a third-party key under "django", another program's key) may hold anything, so
    only its first segment is kept; RQ's keys hold job ids, kept.
    """
    text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    parts = text.split(":")
    prefix = settings.KESTREL_KEY_PREFIX
    if parts[0] == "rq":
        return text
    if parts[0] != prefix:
        return f"{parts[0]}:{REDACTED}" if len(parts) > 1 else REDACTED
    if len(parts) < 3:
        return f"{prefix}:{REDACTED}"
    if parts[1] == "django":
        return f"{prefix}:django:{REDACTED}"
    if len(parts) > 3 and f"{parts[1]}:{parts[2]}" in settings.KESTREL_CREDENTIAL_KEY_FAMILIES:
        parts[3] = REDACTED
    return ":".join(parts)
