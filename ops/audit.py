"""Redis best-practice rules, checked against the live servers (manage.py redis_audit).

Rules: reachable, layout (roles on separate servers), cache_ttl (every cache key has a
TTL, by SCAN), big_keys, eviction (state and queue `noeviction`, cache evicting under a
maxmemory), persistence (the state and queue roles on AOF), slowlog. The roles are
core.redis.reported_roles(): the queue role when it is not the state role's database.
Each gives one Finding per role: ok,
warning, error or skipped (a managed Redis may forbid CONFIG). A run is broken on any
error, or any warning under `strict` (docs/design.md, "Redis roles", says why each rule).

A role on Redis Cluster is read node by node (ops.nodes): reachable lists every node
and is an error while a primary does not answer; eviction, persistence and slowlog give
a finding per node (Finding.node); cache_ttl and big_keys SCAN every primary, each for
its share of --max-keys and --sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import cast

from django.conf import settings
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from core.instrumentation import key_family, redacted_command
from core.keys import redact_key
from core.redis import SAFE_STATE_POLICIES, RedisClient, Role, get_redis, reported_roles
from ops.nodes import ask_each, role_nodes

OK, WARNING, ERROR, SKIPPED = "ok", "warning", "error", "skipped"

EVICTING_CACHE_POLICIES = {"allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu"}
EVICTING_CACHE_POLICIES |= {"volatile-random", "volatile-ttl"}  # every cache key has a TTL
EXAMPLES = 5  # keys or entries shown per finding
# The roles that must keep what they hold (noeviction, AOF), and what they would lose.
DURABLE_ROLES = {
    "state": "sessions, revoked tokens, rate-limit counters, locks and queued jobs",
    "queue": "queued jobs, their results and the workers' registrations",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    role: str  # "state", "cache", "queue" or "both" (state and cache)
    level: str
    message: str
    details: tuple[str, ...] = ()
    node: str = ""  # a node of a cluster role (host:port) when the finding is that node's

    def as_dict(self) -> dict:
        data = asdict(self)
        data["details"] = list(self.details)
        return data


@dataclass(frozen=True)
class AuditOptions:
    strict: bool = False
    max_keys: int = 100_000  # keys SCANned per role for cache_ttl; the rest is not read
    sample: int = 1_000  # keys per role given to MEMORY USAGE
    big_key_bytes: int = 1024 * 1024
    slowlog_entries: int = 10
    scan_count: int = 1_000  # SCAN COUNT hint and pipeline batch size


@dataclass
class AuditReport:
    findings: list[Finding] = field(default_factory=list)
    strict: bool = False

    @property
    def broken(self) -> list[Finding]:
        levels = {ERROR, WARNING} if self.strict else {ERROR}
        return [finding for finding in self.findings if finding.level in levels]

    def as_dict(self) -> dict:
        return {
            "ok": not self.broken,
            "strict": self.strict,
            "broken": len(self.broken),
            "findings": [finding.as_dict() for finding in self.findings],
        }


@dataclass(frozen=True)
class _Server:
    """A server a role's rules read: the role's one server, or a node of its cluster."""

    client: Redis
    info: dict
    node: str = ""  # a cluster node's address; "" for a single server
    primary: bool = True


def run_audit(options: AuditOptions | None = None, *, clients: dict[Role, RedisClient] | None = None) -> AuditReport:
    options = options or AuditOptions()
    clients = clients or {role: get_redis(role) for role in reported_roles()}
    report = AuditReport(strict=options.strict)
    add = report.findings.extend

    servers: dict[Role, list[_Server]] = {}
    for role, client in clients.items():
        if isinstance(client, RedisCluster):
            finding, answered = _reach_cluster(role, client)
            report.findings.append(finding)
            if answered:
                servers[role] = answered
            continue
        try:
            info = client.info()
        except RedisError as exc:
            report.findings.append(Finding("reachable", role, ERROR, f"{_where(role, client)} did not answer: {exc}"))
            continue
        report.findings.append(Finding("reachable", role, OK, f"{_where(role, client)} answers"))
        servers[role] = [_Server(client, info)]

    if "state" in servers and "cache" in servers:
        add(_layout(clients, servers))
    for role in servers:
        for server in servers[role]:
            add(_eviction(role, server))
    for role in servers:
        if role in DURABLE_ROLES:
            for server in servers[role]:
                add(_persistence(role, server))
    if "cache" in servers:
        add(_cache_ttl(_primaries(servers["cache"]), options))
    for role in servers:
        add(_big_keys(role, _primaries(servers[role]), options))
    add(_slowlog(servers, options))
    return report


def _primaries(servers: list[_Server]) -> list[_Server]:
    """The servers that hold a role's keys: its one server, or its cluster's primaries."""
    return [server for server in servers if server.primary]


def _reach_cluster(role: Role, client: RedisCluster) -> tuple[Finding, list[_Server]]:
    """INFO of each node of a cluster role: the reachable finding, and the nodes that answered."""
    answered: list[_Server] = []
    lines: list[str] = []
    missing: list[str] = []
    for node, replies in ask_each(role_nodes(client), lambda pipe: pipe.info()):
        part = f"{node.kind} {node.address}"
        if node.primary:
            part += f" ({node.slot_count} slots)"
        else:
            part += f" (of {node.replica_of})"
        if isinstance(replies, Exception):
            lines.append(f"{part}: did not answer: {type(replies).__name__}: {replies}")
            if node.primary:
                missing.append(node.address)
            continue
        lines.append(f"{part}: answers")
        answered.append(_Server(cast(Redis, node.client), replies[0], node.address, node.primary))
    where = f"the {role} role's Redis Cluster"
    primaries = len([server for server in answered if server.primary]) + len(missing)
    if missing:
        message = f"{where}: {len(missing)} of {primaries} primaries did not answer ({', '.join(missing)})"
        return Finding("reachable", role, ERROR, message, tuple(lines)), answered
    if not primaries:
        return Finding("reachable", role, ERROR, f"{where} names no primary", tuple(lines)), []
    replicas = len(lines) - primaries
    message = f"{where} answers: {primaries} primaries, {replicas} replica{'s' if replicas != 1 else ''}"
    return Finding("reachable", role, OK, message, tuple(lines)), answered


def _where(role: str, client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs  # no password in this form
    address = kwargs.get("path") or f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    return f"the {role} role's Redis at {address}/{kwargs.get('db', 0)}"


def _db(client: RedisClient) -> int:
    if isinstance(client, RedisCluster):
        return 0  # a cluster has database 0 only
    return int(client.connection_pool.connection_kwargs.get("db", 0) or 0)


def _layout(clients: dict[Role, RedisClient], servers: dict[Role, list[_Server]]) -> list[Finding]:
    # Servers are told apart by their run_id: a cluster role's nodes are each a server.
    state_runs = {server.info.get("run_id") for server in servers["state"]}
    same_server = any(server.info.get("run_id") in state_runs for server in servers["cache"])
    if same_server and _db(clients["state"]) == _db(clients["cache"]):
        return [
            Finding(
                "layout",
                "both",
                ERROR,
                "The state and cache roles are the same database: clearing the cache deletes sessions and jobs.",
            )
        ]
    if same_server:
        return [
            Finding(
                "layout",
                "both",
                WARNING,
                "The state and cache roles share one Redis server (different databases): eviction is per "
                "server, so the cache cannot evict without evicting state. Give the cache its own server.",
            )
        ]
    return [Finding("layout", "both", OK, "The state and cache roles are separate servers")]


def _eviction(role: str, server: _Server) -> list[Finding]:
    policy = str(server.info.get("maxmemory_policy", "unknown"))
    maxmemory = int(server.info.get("maxmemory", 0) or 0)
    node = server.node
    if role in DURABLE_ROLES:
        if policy in SAFE_STATE_POLICIES:
            return [Finding("eviction", role, OK, f"maxmemory-policy {policy}", node=node)]
        return [
            Finding(
                "eviction",
                role,
                ERROR,
                f"The {role} role has maxmemory-policy {policy!r}: under memory pressure it evicts "
                f"{DURABLE_ROLES[role]}. Use noeviction.",
                node=node,
            )
        ]
    if policy not in EVICTING_CACHE_POLICIES:
        return [
            Finding(
                "eviction",
                role,
                WARNING,
                f"The cache role has maxmemory-policy {policy!r}: a full cache refuses writes instead of "
                "evicting. Use allkeys-lru or allkeys-lfu with a maxmemory.",
                node=node,
            )
        ]
    if maxmemory == 0:
        return [
            Finding(
                "eviction",
                role,
                WARNING,
                f"The cache role evicts ({policy}) but has no maxmemory: it grows until the host runs out of memory.",
                node=node,
            )
        ]
    return [Finding("eviction", role, OK, f"maxmemory-policy {policy}, maxmemory {maxmemory} bytes", node=node)]


def _persistence(role: str, server: _Server) -> list[Finding]:
    info, node = server.info, server.node
    findings = []
    if str(info.get("rdb_last_bgsave_status", "ok")) != "ok":
        # With stop-writes-on-bgsave-error (the default) Redis then refuses every write.
        findings.append(Finding("persistence", role, ERROR, f"The {role} role's last RDB snapshot failed.", node=node))
    if not int(info.get("aof_enabled", 0) or 0):
        findings.append(
            Finding(
                "persistence",
                role,
                WARNING,
                f"The {role} role does not append to an AOF: a crash loses the {DURABLE_ROLES[role]} written "
                "since the last snapshot. Use appendonly yes, appendfsync everysec.",
                node=node,
            )
        )
        return findings
    if str(info.get("aof_last_write_status", "ok")) != "ok":
        findings.append(Finding("persistence", role, ERROR, f"The {role} role's last AOF write failed.", node=node))
    try:
        fsync = str(server.client.config_get("appendfsync").get("appendfsync", "unknown"))
    except ResponseError:
        fsync = "unknown (CONFIG is not allowed)"
    if fsync == "no":
        findings.append(
            Finding(
                "persistence",
                role,
                WARNING,
                f"The {role} role's AOF has appendfsync no: the kernel decides when writes reach the disk.",
                node=node,
            )
        )
    if not findings:
        findings.append(Finding("persistence", role, OK, f"AOF on, appendfsync {fsync}", node=node))
    return findings


def _batches(client: Redis, options: AuditOptions, match: str | None, limit: int):
    """Keys by SCAN (never KEYS) in batches, at most `limit` in all."""
    batch: list[bytes] = []
    for seen, key in enumerate(client.scan_iter(match=match, count=options.scan_count), start=1):
        batch.append(key)
        if len(batch) >= options.scan_count:
            yield batch
            batch = []
        if seen >= limit:
            break
    if batch:
        yield batch


def _share(limit: int, servers: list[_Server]) -> int:
    """Keys to read on each of `servers` (a cluster role's primaries share the role's `limit`)."""
    return -(-limit // len(servers))


def _across(servers: list[_Server]) -> str:
    """ " on 3 primaries" for a cluster role's servers; "" for a single server."""
    return f" on {len(servers)} primaries" if servers[0].node else ""


def _on(server: _Server) -> str:
    return f" (on {server.node})" if server.node else ""


def _cache_ttl(servers: list[_Server], options: AuditOptions) -> list[Finding]:
    scanned = 0
    limited = False
    without_ttl: list[str] = []
    share = _share(options.max_keys, servers)
    for server in servers:
        seen = 0
        for batch in _batches(server.client, options, f"{settings.KESTREL_KEY_PREFIX}:*", share):
            pipe = server.client.pipeline(transaction=False)
            for key in batch:
                pipe.ttl(key)
            for key, ttl in zip(batch, pipe.execute(), strict=True):
                if ttl == -1:  # -2: deleted since the SCAN saw it
                    without_ttl.append(key.decode(errors="replace"))
            seen += len(batch)
        scanned += seen
        limited = limited or seen >= share
    stopped = " (stopped at --max-keys)" if limited else ""
    if not without_ttl:
        return [
            Finding("cache_ttl", "cache", OK, f"All {scanned} cache keys scanned{_across(servers)} have a TTL{stopped}")
        ]
    families = Counter(key_family(key) for key in without_ttl)
    return [
        Finding(
            "cache_ttl",
            "cache",
            ERROR,
            f"{len(without_ttl)} of {scanned} cache keys scanned{_across(servers)} have no TTL{stopped}: they never "
            "expire and outlive the rows they copy.",
            (
                "by family: " + ", ".join(f"{family} {count}" for family, count in families.most_common()),
                *(f"e.g. {redact_key(key)}" for key in without_ttl[:EXAMPLES]),
            ),
        )
    ]


def _big_keys(role: str, servers: list[_Server], options: AuditOptions) -> list[Finding]:
    sampled = 0
    big: list[tuple[int, str, _Server]] = []
    share = _share(options.sample, servers)
    try:
        for server in servers:
            for batch in _batches(server.client, options, None, share):
                pipe = server.client.pipeline(transaction=False)
                for key in batch:
                    pipe.memory_usage(key)
                for key, size in zip(batch, pipe.execute(), strict=True):
                    if size is not None and size > options.big_key_bytes:
                        big.append((size, key.decode(errors="replace"), server))
                sampled += len(batch)
    except ResponseError as exc:  # MEMORY is not allowed on some managed services
        return [Finding("big_keys", role, SKIPPED, f"MEMORY USAGE is not available: {exc}")]
    sample = f"a sample of {sampled}{_across(servers)}"
    if not big:
        return [Finding("big_keys", role, OK, f"No key over {options.big_key_bytes} bytes in {sample}")]
    big.sort(key=lambda found: (found[0], found[1]), reverse=True)
    return [
        Finding(
            "big_keys",
            role,
            ERROR,
            f"{len(big)} keys over {options.big_key_bytes} bytes in {sample}: a big key blocks the server while "
            "it is read, written, expired or evicted.",
            tuple(f"{redact_key(key)}: {size} bytes{_on(server)}" for size, key, server in big[:EXAMPLES]),
        )
    ]


def _slowlog(servers: dict[Role, list[_Server]], options: AuditOptions) -> list[Finding]:
    """One finding per server (a single server's roles share one SLOWLOG; a cluster's nodes each have theirs)."""
    findings = []
    roles_of: dict[str, set[str]] = {}
    for role, role_servers in servers.items():
        for server in role_servers:
            roles_of.setdefault(str(server.info.get("run_id", role)), set()).add(role)
    seen: set[str] = set()
    for role, role_servers in servers.items():
        for server in role_servers:
            run_id = str(server.info.get("run_id", role))
            if run_id in seen:  # one SLOWLOG per server, not per database
                continue
            seen.add(run_id)
            label = role if len(roles_of[run_id]) == 1 else "both"
            findings.append(_slowlog_finding(label, server, options))
    return findings


def _slowlog_finding(label: str, server: _Server, options: AuditOptions) -> Finding:
    try:
        entries = server.client.slowlog_get(options.slowlog_entries)
        total = server.client.slowlog_len()
    except ResponseError as exc:
        return Finding("slowlog", label, SKIPPED, f"SLOWLOG is not available: {exc}", node=server.node)
    if not total:
        return Finding("slowlog", label, OK, "SLOWLOG is empty", node=server.node)
    entries = sorted(entries, key=lambda entry: entry.get("duration", 0), reverse=True)
    return Finding(
        "slowlog",
        label,
        WARNING,
        f"{total} commands in SLOWLOG ran longer than slowlog-log-slower-than; the slowest:",
        tuple(_slowlog_line(entry) for entry in entries[:EXAMPLES]),
        node=server.node,
    )


def _slowlog_line(entry: dict) -> str:
    command = entry.get("command", b"")
    if isinstance(command, bytes):
        command = command.decode(errors="replace")
    # The command and its first key, redacted: never the values, nor a session key's id.
    shown = redacted_command(tuple(command.split(" ")))[:120] if command else ""
    when = datetime.fromtimestamp(int(entry.get("start_time", 0)), UTC).isoformat(timespec="seconds")
    client = entry.get("client_name", b"")
    if isinstance(client, bytes):
        client = client.decode(errors="replace")
    return f"{entry.get('duration', 0)} us at {when} {shown}" + (f" (client {client})" if client else "")
