"""Rate-limit policies as data: settings.KESTREL_RATE_LIMITS, read and checked at start-up.

A policy is a limit and a window, an algorithm ("fixed" or "gcra"), whom it counts
(scope), what an outage of Redis does (fail "open" or "closed"), and the paths and
methods it covers. Anything malformed stops start-up (ImproperlyConfigured), naming the
policy. Without the setting there are no policies: the project defines its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.converters import IdConverter

if TYPE_CHECKING:
    from core.ratelimit.identity import Identity

Algorithm = Literal["fixed", "gcra"]
Scope = Literal["user_or_ip", "ip", "account"]
FailMode = Literal["open", "closed"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_METHOD = re.compile(r"[A-Z]+\Z")
US_PER_SECOND = 1_000_000  # the check script counts time in microseconds


@dataclass(frozen=True)
class Policy:
    name: str  # a key facet and the policy's name in the RateLimit fields
    limit: int  # requests per window
    window: int  # seconds
    algorithm: Algorithm = "fixed"
    scope: Scope = "user_or_ip"
    fail: FailMode = "open"
    paths: tuple[str, ...] = ("/api/*",)
    methods: frozenset[str] = frozenset()  # empty: every method

    def applies_to(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods:
            return False
        return paths_match(self.paths, path)

    def subject(self, identity: Identity) -> str | None:
        """Whom this policy counts for the request, or None when it cannot say (no account)."""
        if self.scope == "account":
            return f"account:{identity.account}" if identity.account else None
        if self.scope == "user_or_ip" and identity.user_id is not None:
            return f"user:{identity.user_id}"
        return f"ip:{identity.ip}"


# --- Paths ------------------------------------------------------------------------------

_ID_SEGMENT = "<id>"


def path_pattern_ok(pattern: object) -> bool:
    """Whether `pattern` is in the paths' grammar: "/" first, a "*" only last, and "<"
    or ">" only in a "<id>" segment (anything else would be read literally, and a
    policy that silently matched nothing would be a limit that is not there)."""
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        return False
    body = pattern.removesuffix("*")
    if "*" in body:
        return False
    return all(s == _ID_SEGMENT or not ("<" in s or ">" in s) for s in body.split("/"))


@functools.cache
def _paths_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regex per policy, compiled once: the middleware matches every request
    # against every policy.
    alternatives = []
    for pattern in patterns:
        prefix = pattern.endswith("*")
        segments = pattern.removesuffix("*").split("/")
        body = "/".join(IdConverter.regex if s == _ID_SEGMENT else re.escape(s) for s in segments)
        alternatives.append(f"(?:{body}{'.*' if prefix else ''})")
    return re.compile("|".join(alternatives), re.DOTALL)


def paths_match(patterns: tuple[str, ...], path: str) -> bool:
    """Whether `path` (a request's path_info) matches one of `patterns`, ignoring a trailing slash.

    A pattern is exact; one ending in "*" is a prefix; a "<id>" segment matches one id
    as the URLconf's <id:...> reads it.
    """
    if len(path) > 1:
        path = path.rstrip("/")
    return _paths_regex(patterns).fullmatch(path) is not None


# --- Policies from settings -------------------------------------------------------------

_FIELDS = {"limit", "window", "algorithm", "scope", "fail", "paths", "methods"}


def load_policies(config: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Policy, ...]:
    """Policies from a KESTREL_RATE_LIMITS-shaped dict (default: the setting, else none).

    Refuses, naming the policy, anything it would otherwise misread: an unknown field
    (a typo such as "limt" must not silently fall back to a default), a bad value.
    """
    if config is None:
        config = getattr(settings, "KESTREL_RATE_LIMITS", {})
    return tuple(_policy(name, spec) for name, spec in config.items())


def _positive_int(value: object, field: str, bad: Callable[[str], ImproperlyConfigured]) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad(f"{field} must be a positive integer, not {value!r}")
    return value


def _policy(name: str, spec: Mapping[str, Any]) -> Policy:
    def bad(why: str) -> ImproperlyConfigured:
        return ImproperlyConfigured(f"KESTREL_RATE_LIMITS[{name!r}]: {why}")

    if not isinstance(name, str) or not _NAME.match(name):
        raise bad(f"the name must match {_NAME.pattern}")
    if not isinstance(spec, Mapping):
        raise bad(f"must be a dict of fields, not {spec!r}")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise bad(f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    limit, window = _positive_int(spec.get("limit"), "limit", bad), _positive_int(spec.get("window"), "window", bad)
    algorithm = spec.get("algorithm", "fixed")
    scope = spec.get("scope", "user_or_ip")
    fail = spec.get("fail", "open")
    for field, value, allowed in (
        ("algorithm", algorithm, ("fixed", "gcra")),
        ("scope", scope, ("user_or_ip", "ip", "account")),
        ("fail", fail, ("open", "closed")),
    ):
        if value not in allowed:
            raise bad(f"{field} must be one of {allowed}, not {value!r}")
    if algorithm == "gcra" and window * US_PER_SECOND // limit < 1:
        # GCRA spaces requests in whole microseconds.
        raise bad("the limit is too high for the window (more than one request a microsecond)")
    paths = spec.get("paths", ["/api/*"])
    if isinstance(paths, str) or not paths or not all(path_pattern_ok(p) for p in paths):
        raise bad(
            "paths must be a non-empty list of paths starting with '/', with '*' only at the end and "
            f"'<id>' only as a whole segment, not {paths!r}"
        )
    methods = spec.get("methods") or []
    if isinstance(methods, str) or not all(isinstance(m, str) and _METHOD.match(m) for m in methods):
        raise bad(f"methods must be a list of upper-case HTTP methods, not {methods!r}")
    return Policy(
        name=name,
        limit=limit,
        window=window,
        algorithm=algorithm,
        scope=scope,
        fail=fail,
        paths=tuple(paths),
        methods=frozenset(methods),
    )
