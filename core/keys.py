"""The key grammar every app's keys.py builds on.

    <prefix>:<app>:<entity>[:<id>][:<facet>]     e.g. kestrel:posts:post:42

The prefix is settings.KESTREL_KEY_PREFIX (env REDIS_KEY_PREFIX), so two Kestrels,
or a test run, can share one Redis server. Builders return the full key: the same
string works with a raw client and with Django's cache API (see django_cache_key).
"""

from __future__ import annotations

import hashlib
import re

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.@+-]{1,64}\Z")


def key(app: str, entity: str, id: int | str | None = None, facet: str | None = None) -> str:
    """Build a key; `app`, `entity` and `facet` are code, `id` may come from a user.

    An id that is not short and plain (a cookie value, an email, free text) is
    hashed, so user input can never add a `:` segment, a glob character or a
    megabyte-long key.
    """
    for part in (app, entity, facet):
        if part is not None and part not in _checked_names:
            _check_name(part)
    parts = [_prefix or _read_prefix(), app, entity]
    if id is not None:
        parts.append(safe_id(id))
    if facet is not None:
        parts.append(facet)
    return ":".join(parts)


# The prefix, read once: a feed page builds about fifty keys, and every read of a
# setting goes through LazySettings. Reset when a test overrides the setting.
_prefix = ""


def _read_prefix() -> str:
    global _prefix
    _prefix = settings.KESTREL_KEY_PREFIX
    return _prefix


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
