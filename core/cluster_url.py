"""Parse a Redis Cluster URL into its seed nodes, password and TLS flag.

    redis+cluster://[user:password@]host[:port],host[:port][/][?options]
    rediss+cluster://...   the same over TLS

Every host:port is a seed node: a cluster client asks the first that answers for the
slot map, so a few nodes of the cluster are enough. A host without a port takes 6379;
an IPv6 address goes in brackets ([::1]:7000). The password is checked against Redis's
default user, so the only username accepted is `default` (or none). A cluster has only
database 0, so the path may only be empty, `/` or `/0`. Options after `?` are left to
the client. Error messages never repeat the password.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple
from urllib.parse import unquote

DEFAULT_PORT = 6379
_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\Z")
_PATH_AND_QUERY = re.compile(r"(?:/0?)?(?:\?.*)?\Z")


class ClusterURL(NamedTuple):
    nodes: list[tuple[str, int]]
    password: str | None
    ssl: bool


def parse_cluster_url(url: str) -> ClusterURL:
    """The seed nodes, password and TLS flag of a cluster URL; ValueError saying what is wrong."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in _SCHEMES:
        raise ValueError(
            f"a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://, not {scheme.partition(':')[0]!r}"
        )
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "#" in tail:
        raise ValueError("a Redis Cluster URL takes no #fragment")
    if not _PATH_AND_QUERY.match(tail):
        path = tail.partition("?")[0]
        raise ValueError(f"a Redis Cluster has only database 0: the path may be empty, / or /0, not {path!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    password = _password(userinfo) if at else None
    if not hosts:
        raise ValueError("the Redis Cluster URL names no node (host:port after ://)")
    return ClusterURL([_node(entry) for entry in hosts.split(",")], password, _SCHEMES[scheme.lower()])


def _password(userinfo: str) -> str | None:
    user, colon, password = userinfo.partition(":")
    user = unquote(user)
    if user not in ("", "default"):
        raise ValueError(
            f"the Redis Cluster URL names the user {user!r}: only the default user is supported "
            "(redis+cluster://:password@... or redis+cluster://default:password@...)"
        )
    return unquote(password) if colon and password else None


def _node(entry: str) -> tuple[str, int]:
    """("host", port) of one `host[:port]` or `[IPv6][:port]` entry."""
    if entry.startswith("["):
        host, bracket, after = entry[1:].partition("]")
        if not bracket:
            raise ValueError(f"{entry!r}: an IPv6 address needs its closing bracket")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{entry!r}: {host!r} in brackets is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(f"{entry!r}: only :port may follow the bracketed address")
        colon, port = bool(after), after[1:]
    else:
        if entry.count(":") > 1:
            raise ValueError(f"{entry!r}: an IPv6 address goes in brackets, e.g. [::1]:7000")
        host, separator, port = entry.partition(":")
        colon = bool(separator)
        if not _HOSTNAME.match(host):
            raise ValueError(f"{entry!r} is not host:port (a node entry is empty or its host is malformed)")
    if not colon:
        return host, DEFAULT_PORT
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return host, int(port)
