"""Whom a request counts as: its user, its client address, the account its body names.

Only what the covering policies need is looked at: no session load, no body parse
otherwise, and a credential (guard.Credential) wins over loading the session. Never
raises for a bad body or an unreachable session store: the request then counts by
address, and the check that follows meets the same outage.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, RawPostDataException
from django.http.multipartparser import MultiPartParserError

from core.redis import is_unavailable

if TYPE_CHECKING:
    from core.ratelimit.guard import CredentialFinder, Guard, GuardVerdict
    from core.ratelimit.policies import Policy

# Where the per-account policies find the account in a body, first present wins: the
# order in which accounts.backends.EmailBackend reads them (the site's and the API's
# log-ins send "email"; sign-ups send "email" and "username"; the admin's log-in form
# posts the email as "username").
ACCOUNT_FIELDS = ("email", "username")

# settings.KESTREL_RATE_LIMIT_USER_ACCOUNT: a signed-in user's account, as the log-in
# doors name it; `user` is the session's user when the request loaded it already.
UserAccount = Callable[..., str | None]


@dataclass(frozen=True)
class Identity:
    """Who sent a request, as far as the policies care."""

    ip: str
    user_id: int | None = None
    account: str | None = None  # normalised by normalise_account
    # Set when user_id comes from a credential that may have been revoked: the request
    # counts as user_id only if the guard passes.
    guard: Guard | None = None
    on_verdict: Callable[[GuardVerdict], None] | None = None


def client_ip(request: HttpRequest, *, trusted_proxies: int = 0) -> str:
    """The client's address, as a rate-limit bucket; IPv6 addresses count per /64.

    With `trusted_proxies` = n > 0, the n-th X-Forwarded-For entry from the right (what is
    left of it can be forged); with 0, or a header with fewer entries, REMOTE_ADDR.
    """
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "") if trusted_proxies > 0 else ""
    return _bucket_address(request.META.get("REMOTE_ADDR", ""), forwarded, trusted_proxies)


# Every request asks (the limiter, the view counter), from a few thousand addresses at
# most: parsing each once saves the ipaddress work on all the others.
@functools.lru_cache(maxsize=4096)
def _bucket_address(address: str, forwarded: str, trusted_proxies: int) -> str:
    if trusted_proxies > 0:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= trusted_proxies:
            address = hops[-trusted_proxies]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # not an address (a test client, a unix socket); hashed all the same
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def normalise_account(value: object) -> str | None:
    """The account named in a log-in body, as the log-in view would read it, or None.

    Mirrors the view and backend: DRF's CharField accepts strings and numbers and trims
    whitespace, and accounts match case-insensitively (iexact). Without this, " Ada@x"
    and "ada@x" would be two accounts to the limiter but one to the backend.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip().casefold()
    return text or None


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# What else a hostile body makes the parsers raise, beyond Django's own refusals (too
# big, too many fields or files, a broken multipart boundary; kept, below): the body
# already read, the connection lost, not JSON, undecodable, nested deeper than
# json.loads recurses.
_UNREADABLE = (RawPostDataException, OSError, ValueError, RecursionError)
# Django parses a form once: after a failed parse, request.POST reads as empty (a JSON
# body is read again, and fails again, by the view). Such an error is kept here and
# raised again once the request is counted (body_error), so the view's door answers
# the 400 it would have answered without the limiter in front of it.
_BODY_ERROR_ATTR = "kestrel_body_error"


def account_from_body(request: HttpRequest, fields: Sequence[str] = ACCOUNT_FIELDS) -> str | None:
    """The account a body names (JSON, or a url-encoded or multipart form), or None.

    Never raises: the view answers a bad body, and the request still counts by address.
    A form is read through request.POST, the parse the view reuses; no size cap beyond
    Django's, so a large body cannot slip past the per-account limit.
    """
    try:
        data = request.POST if request.content_type in _FORM_TYPES else json.loads(request.body)
    except (SuspiciousOperation, MultiPartParserError) as exc:  # too big, too many fields, a broken form
        if request.content_type in _FORM_TYPES:
            setattr(request, _BODY_ERROR_ATTR, exc)
        return None
    except _UNREADABLE:
        return None
    if not isinstance(data, Mapping):
        return None
    for field in fields:
        if data.get(field) not in (None, ""):
            return normalise_account(data.get(field))
    return None


def body_error(request: HttpRequest) -> Exception | None:
    """The form-parsing error account_from_body kept for the view to answer, if any."""
    return getattr(request, _BODY_ERROR_ATTR, None)


def request_identity(
    request: HttpRequest,
    policies: Sequence[Policy],
    *,
    trusted_proxies: int = 0,
    credential: CredentialFinder | None = None,
    user_account: UserAccount | None = None,
) -> Identity:
    """What `policies` need to know about the request, and no more.

    A credential found by `credential(request)` wins over the session (which is then not
    loaded here) and its guard rides in the same script. The account is the one the body
    names, or on a door where it is the signed-in person's, `user_account`'s.
    """
    needs_account = any(p.scope == "account" for p in policies)
    own_account = user_account if needs_account else None  # a door where the account is the user's
    user_id = None
    user = None
    guard = None
    on_verdict = None
    found = credential(request) if credential is not None else None
    if found is not None:
        user_id = found.user_id
        if user_id is not None:
            guard, on_verdict = found.guard, found.on_verdict
    elif own_account is not None or any(p.scope == "user_or_ip" for p in policies):
        user = _session_user(request)
        user_id = user.pk if user is not None else None
    account = None
    if own_account is not None:
        if user_id is not None:
            account = normalise_account(own_account(user_id=user_id, user=user))
    elif needs_account:
        account = account_from_body(request)
    return Identity(
        ip=client_ip(request, trusted_proxies=trusted_proxies),
        user_id=user_id,
        account=account,
        guard=guard,
        on_verdict=on_verdict if guard is not None else None,
    )


def _session_user(request: HttpRequest) -> AbstractBaseUser | None:
    user = getattr(request, "user", None)  # set by AuthenticationMiddleware, which must come first
    if user is None:
        return None
    try:
        return user if user.is_authenticated else None
    except Exception as exc:
        # The session store (Redis) is down: count by address. The rate-limit check
        # about to run meets the same outage and applies the policies' failure modes.
        if not is_unavailable(exc):
            raise
        return None
